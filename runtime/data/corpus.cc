#include "runtime/data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

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

StatusOr<std::string> read_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return BadInput(path + " is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return BadInput("error reading " + path);
  return ss.str();
}

StatusOr<std::string> load_corpus(const std::string& name, const std::string& data_dir) {
  if (name == "excerpt") {
    const std::string path = data_dir + "/moby_dick_excerpt.txt";
    if (!fs::exists(path)) return NotFound("corpus 'excerpt': " + path + " not found");
    return read_file(path);
  }
  if (name == "moby_dick") {
    const std::string path = data_dir + "/third_party/moby-dick/package/data/data.txt";
    if (!fs::exists(path)) return missing(name, path);
    return read_file(path);
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
      SY_ASSIGN_OR_RETURN(std::string part, read_file(dir + "/" + f));
      text += part;
    }
    return text;
  }
  std::string known;
  for (const std::string& n : corpus_names()) known += (known.empty() ? "" : ", ") + n;
  return InvalidArgument("unknown corpus '" + name + "' (known: " + known + ")");
}

}  // namespace sy
