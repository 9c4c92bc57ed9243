// Training checkpoints on disk (issue 5): a checkpoint ROOT folder holds one sub-folder per
// saved step, each a complete Hugging Face model folder plus the training state, published
// atomically and sealed by a manifest of SHA-256 checksums.
//
//   ROOT/step-00000006/            a published checkpoint (renamed from .tmp-step-00000006)
//        config.json               the model's config (with the router kind, see qwen2_moe.h)
//        model.safetensors.index.json, model-*.safetensors   the weights (experts by global id)
//        router.safetensors        the routers alone (model.layers.{i}.mlp.gate.*)
//        optimizer-*.safetensors, trainer_state.json         what resuming needs
//        tokenizer files copied from the source model
//        manifest.json             written LAST, before the rename: every other file's size
//                                  and SHA-256; a folder without it is not a checkpoint
//   ROOT/.tmp-step-00000008/       a save in progress or one that crashed: never read
//
// A reader picks the highest step-* folder that has a manifest and verifies every file listed
// before using it: a missing, truncated or altered file is refused with a message naming the
// folder and the file (kBadInput), never skipped silently. The rename makes a half-written
// save invisible, so a crash during a save leaves the previous checkpoint the latest.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

// Incremental SHA-256 (OpenSSL's EVP): feed bytes, then hex() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  std::string hex();  // 64 lowercase hex digits; ends the stream
 private:
  void* ctx_;
};
StatusOr<std::string> sha256_file(const std::string& path);

struct ManifestFile {
  int64_t bytes = 0;
  std::string sha256;
};
struct Manifest {
  int64_t step = 0;
  int world_size = 1;
  std::map<std::string, ManifestFile> files;  // plain file names inside the folder
};

constexpr const char* kManifestName = "manifest.json";

// "step-00000006"
std::string checkpoint_folder_name(int64_t step);

// Writes `text` to dir/name atomically (tmp + fsync + rename) and returns its record.
StatusOr<ManifestFile> write_file_hashed(const std::string& dir, const std::string& name,
                                         const std::string& text);
// Writes dir/manifest.json (atomically, fsync'd).
Status write_manifest(const std::string& dir, const Manifest& m);
// Reads dir/manifest.json defensively and checks every file's size and checksum.
StatusOr<Manifest> verify_checkpoint(const std::string& dir);

// True when `dir` looks like a checkpoint root: no config.json of its own and at least one
// step-* or .tmp-step-* sub-folder.
bool is_checkpoint_root(const std::string& dir);
// The published step folders under root (those with a manifest), ascending by step.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& root);
// The latest published checkpoint under root, verified; "" when there is none. A latest one
// that fails verification is an error (kBadInput), not a fallback.
StatusOr<std::string> latest_checkpoint(const std::string& root);
// `dir` itself when it is a model folder, else the latest verified checkpoint of the root
// (kNotFound when a root holds none).
StatusOr<std::string> resolve_model_dir(const std::string& dir);
// Like resolve_model_dir, but the newest published step folder is not verified: for side files
// (the tokenizer) that must not cost a checksum pass over every weight.
StatusOr<std::string> resolve_model_dir_unverified(const std::string& dir);

}  // namespace sy
