#include "runtime/data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "runtime/core/file_input.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

Status missing(const std::string& name, const std::string& path) {
  return NotFound("corpus '" + name + "': " + path +
                  " not found; run launch/setup.sh to fetch data/third_party");
}

}  // namespace

std::vector<std::string> corpus_names() {
  return {"moby_dick", "sotu", "excerpt"};
}

StatusOr<std::string> read_file(const std::string& path, const std::string& what,
                                int64_t max_bytes) {
  return read_file_bounded(path, max_bytes, what);
}

StatusOr<std::string> load_corpus(const std::string& name, const std::string& data_dir) {
  if (name == "excerpt") {
    const std::string path = data_dir + "/moby_dick_excerpt.txt";
    StatusOr<std::string> text = read_file(path, "corpus");
    if (text.status().code() == StatusCode::kNotFound)
      return NotFound("corpus 'excerpt': " + path + " not found");
    return text;
  }
  if (name == "moby_dick") {
    const std::string path = data_dir + "/third_party/moby-dick/package/data/data.txt";
    StatusOr<std::string> text = read_file(path, "corpus");
    if (text.status().code() == StatusCode::kNotFound) return missing(name, path);
    return text;
  }
  if (name == "sotu") {
    const std::string dir = data_dir + "/third_party/sotu/package/data";
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return missing(name, dir);
    std::vector<std::string> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".txt") files.push_back(it->path().filename().string());
    if (ec) return BadInput("corpus 'sotu': cannot list " + dir + ": " + ec.message());
    if (files.empty()) return missing(name, dir + "/*.txt");
    std::sort(files.begin(), files.end());  // file names start with the year
    std::string text;
    for (const std::string& f : files) {
      SY_ASSIGN_OR_RETURN(std::string part, read_file(dir + "/" + f, "corpus"));
      text += part;
    }
    return text;
  }
  // Not a corpus name: a text file's path.
  StatusOr<std::string> text = read_file(name, "corpus");
  if (text.ok() || text.status().code() != StatusCode::kNotFound) return text;
  std::string known;
  for (const std::string& n : corpus_names()) known += (known.empty() ? "" : ", ") + n;
  return InvalidArgument("corpus '" + name + "': not a corpus name (" + known +
                         ") and no such file");
}

}  // namespace sy
