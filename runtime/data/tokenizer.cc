#include "runtime/data/tokenizer.h"

#include <sys/stat.h>

#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/hf_tokenizer.h"
#include "runtime/data/wordpiece_tokenizer.h"

namespace sy {
namespace {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  Gpt2Tokenizer(BpeTokenizer bpe, std::string folder)
      : bpe_(std::move(bpe)), folder_(std::move(folder)) {}
  std::vector<int32_t> encode(std::string_view text) const override { return bpe_.encode(text); }
  std::string decode(const std::vector<int32_t>& ids) const override { return bpe_.decode(ids); }
  int64_t vocab_size() const override { return bpe_.vocab_size(); }
  std::string name() const override { return "gpt2-bpe " + folder_; }

 private:
  BpeTokenizer bpe_;
  std::string folder_;
};

enum class PathKind { kAbsent, kFile, kDir };
PathKind path_kind(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PathKind::kAbsent;
  return S_ISDIR(st.st_mode) ? PathKind::kDir : PathKind::kFile;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path) {
  const PathKind kind = path_kind(path);
  if (kind == PathKind::kAbsent) return NotFound(path + ": no such tokenizer file or folder");
  std::string hf_json = path;
  if (kind == PathKind::kDir) {
    hf_json = path + "/tokenizer.json";
    if (path_kind(hf_json) != PathKind::kFile) {
      const std::string encoder = path + "/encoder.json", merges = path + "/vocab.bpe";
      if (path_kind(encoder) != PathKind::kFile || path_kind(merges) != PathKind::kFile) {
        for (const char* vocab : {"/vocab.txt", "/vocab.json"}) {
          if (path_kind(path + vocab) != PathKind::kFile) continue;
          SY_ASSIGN_OR_RETURN(WordPieceTokenizer wp, WordPieceTokenizer::load(path + vocab));
          return std::unique_ptr<Tokenizer>(std::make_unique<WordPieceTokenizer>(std::move(wp)));
        }
        return NotFound(path + ": the folder has neither tokenizer.json nor encoder.json + " +
                        "vocab.bpe nor BERT's vocab.txt / vocab.json");
      }
      SY_ASSIGN_OR_RETURN(BpeTokenizer bpe, BpeTokenizer::load(encoder, merges));
      return std::unique_ptr<Tokenizer>(std::make_unique<Gpt2Tokenizer>(std::move(bpe), path));
    }
  }
  SY_ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> hf, HfTokenizer::load(hf_json));
  return std::unique_ptr<Tokenizer>(std::move(hf));
}

}  // namespace sy
