#include "runtime/io/checkpoint_dir.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/io/safetensors.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kStepPrefix = "step-";
constexpr size_t kMaxManifestFiles = 100000;

// "step-00000006" -> 6; -1 when `name` is not a step folder name.
int64_t StepOf(const std::string& name) {
  const size_t n = std::strlen(kStepPrefix);
  if (name.size() <= n || name.compare(0, n, kStepPrefix) != 0 || name.size() > n + 18) return -1;
  int64_t v = 0;
  for (size_t i = n; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

Status WriteAtomic(const std::string& path, const std::string& text) {
  return write_file_atomic(path, {{text.data(), text.size()}});
}
}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  SY_CHECK(ctx_ != nullptr) << "EVP_MD_CTX_new failed";
  SY_CHECK(EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) == 1);
}
Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}
void Sha256::update(const void* data, size_t n) {
  if (n > 0) SY_CHECK(EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n) == 1);
}
std::string Sha256::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  SY_CHECK(EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len) == 1);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

StatusOr<std::string> sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(path + ": cannot open: " + ErrnoText());
  Sha256 h;
  std::vector<char> buf(size_t{4} << 20);
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const std::string e = ErrnoText();
      ::close(fd);
      return BadInput(path + ": read failed: " + e);
    }
    if (r == 0) break;
    h.update(buf.data(), static_cast<size_t>(r));
  }
  ::close(fd);
  return h.hex();
}

std::string checkpoint_folder_name(int64_t step) {
  char b[40];
  std::snprintf(b, sizeof(b), "%s%08lld", kStepPrefix, static_cast<long long>(step));
  return b;
}

StatusOr<ManifestFile> write_file_hashed(const std::string& dir, const std::string& name,
                                         const std::string& text) {
  SY_RETURN_IF_ERROR(WriteAtomic(dir + "/" + name, text));
  Sha256 h;
  h.update(text.data(), text.size());
  return ManifestFile{static_cast<int64_t>(text.size()), h.hex()};
}

Status write_manifest(const std::string& dir, const Manifest& m) {
  json files = json::object();
  for (const auto& [name, f] : m.files) files[name] = {{"bytes", f.bytes}, {"sha256", f.sha256}};
  const json j = {{"format", "switchyard-checkpoint"},
                  {"version", 1},
                  {"step", m.step},
                  {"world_size", m.world_size},
                  {"files", files}};
  return WriteAtomic(dir + "/" + kManifestName, j.dump(1) + "\n");
}

StatusOr<Manifest> verify_checkpoint(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  SY_ASSIGN_OR_RETURN(json j, read_json_object_file(path));
  const std::string where = path + ": ";
  if (j.value("format", json()) != "switchyard-checkpoint" || j.value("version", json()) != 1)
    return BadInput(where + "not a switchyard-checkpoint version 1 manifest");
  Manifest m;
  const json& step = j["step"];
  const json& ws = j["world_size"];
  if (!step.is_number_integer() || step.get<int64_t>() < 0 || !ws.is_number_integer() ||
      ws.get<int64_t>() < 1 || ws.get<int64_t>() > (1 << 20))
    return BadInput(where + "\"step\" / \"world_size\" missing or out of range");
  m.step = step.get<int64_t>();
  m.world_size = static_cast<int>(ws.get<int64_t>());
  const json& files = j["files"];
  if (!files.is_object() || files.empty() || files.size() > kMaxManifestFiles)
    return BadInput(where + "\"files\" must be a non-empty object");
  for (const auto& [name, rec] : files.items()) {
    if (!is_plain_file_name(name) || name == kManifestName)
      return BadInput(where + "file entry '" + name + "' is not a plain file name");
    if (!rec.is_object() || !rec.contains("bytes") || !rec["bytes"].is_number_integer() ||
        !rec.contains("sha256") || !rec["sha256"].is_string() ||
        rec["sha256"].get<std::string>().size() != 64)
      return BadInput(where + "file entry '" + name + "' needs integer bytes and a sha256");
    m.files[name] = {rec["bytes"].get<int64_t>(), rec["sha256"].get<std::string>()};
  }
  for (const auto& [name, f] : m.files) {
    const std::string p = dir + "/" + name;
    struct stat sb {};
    if (::stat(p.c_str(), &sb) != 0)
      return CorruptCheckpoint("checkpoint " + dir + " is incomplete: " + name +
                               " is listed in its manifest but missing");
    if (sb.st_size != f.bytes)
      return CorruptCheckpoint("checkpoint " + dir + " is corrupted: " + name + " has " +
                               std::to_string(sb.st_size) + " bytes, the manifest says " +
                               std::to_string(f.bytes));
    SY_ASSIGN_OR_RETURN(std::string h, sha256_file(p));
    if (h != f.sha256)
      return CorruptCheckpoint("checkpoint " + dir + " is corrupted: " + name + " has SHA-256 " +
                               h + ", the manifest says " + f.sha256);
  }
  return m;
}

bool is_checkpoint_root(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || fs::exists(dir + "/config.json", ec)) return false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (StepOf(n) >= 0 || (n.rfind(".tmp-", 0) == 0 && StepOf(n.substr(5)) >= 0)) return true;
  }
  return false;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    const int64_t s = StepOf(n);
    if (s >= 0 && fs::exists(e.path() / kManifestName, ec)) out.emplace_back(s, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<std::string> latest_checkpoint(const std::string& root) {
  const auto all = list_checkpoints(root);
  if (all.empty()) return std::string();
  SY_RETURN_IF_ERROR(verify_checkpoint(all.back().second).status());
  return all.back().second;
}

StatusOr<std::string> resolve_model_dir(const std::string& dir) {
  SY_ASSIGN_OR_RETURN(std::string latest, resolve_model_dir_unverified(dir));
  if (latest != dir) SY_RETURN_IF_ERROR(verify_checkpoint(latest).status());
  return latest;
}

StatusOr<std::string> resolve_model_dir_unverified(const std::string& dir) {
  if (!is_checkpoint_root(dir)) return dir;
  const auto published = list_checkpoints(dir);
  if (published.empty())
    return NotFound(dir + ": a checkpoint folder without a complete checkpoint (no step-* " +
                    "folder with a manifest; a save may have been interrupted)");
  return published.back().second;
}

}  // namespace sy
