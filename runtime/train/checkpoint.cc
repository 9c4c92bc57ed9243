#include "runtime/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>

#include "comm/fault.h"
#include "runtime/io/checkpoint_dir.h"
#include "runtime/io/safetensors.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kReplicatedFile = "model-replicated.safetensors";
constexpr const char* kRouterFile = "router.safetensors";
constexpr const char* kOptReplicatedFile = "optimizer-replicated.safetensors";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kIndexFile = "model.safetensors.index.json";
// GPT-2 / Hugging Face tokenizers, and BERT's WordPiece vocabulary (vocab.txt).
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json",
                                           "encoder.json", "vocab.bpe", "vocab.txt"};
constexpr int kFilesPerRank = 2;  // the experts' weights and their moments

std::string RankFile(const char* kind, int r, int P) {
  char b[96];
  std::snprintf(b, sizeof(b), "%s-experts-%05d-of-%05d.safetensors", kind, r, P);
  return b;
}

// The tensors of one file, pointing into memory that lives as long as the builder.
struct FileBuilder {
  std::vector<SafetensorsWriteTensor> ts;
  std::deque<std::vector<float>> store;
  void add(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
    SafetensorsWriteTensor t;
    t.name = name;
    t.shape = shape;
    t.data = data;
    t.nbytes = static_cast<size_t>(Tensor::numel_of(shape)) * sizeof(float);
    ts.push_back(std::move(t));
  }
  void add_copy(const std::string& name, const std::vector<int64_t>& shape, std::vector<float> v) {
    store.push_back(std::move(v));
    add(name, shape, store.back().data());
  }
  // data in memory mem: written from where it is when the host can read it, else from a copy.
  void add(const std::string& name, const std::vector<int64_t>& shape, Memory* mem,
           const float* data) {
    if (mem->host_accessible()) return add(name, shape, data);
    std::vector<float> v(static_cast<size_t>(Tensor::numel_of(shape)));
    mem->copy_to_host(v.data(), data, static_cast<int64_t>(v.size() * sizeof(float)));
    add_copy(name, shape, std::move(v));
  }
};

// Writes dir/name, hashing the bytes as they go out; carries out the save faults of this rank.
Status WriteHashed(const std::string& dir, const std::string& name, const FileBuilder& f, int rank,
                   int64_t step, bool first_file, ManifestFile* rec) {
  Sha256 h;
  int64_t written = 0;
  const FaultSpec* crash = find_fault(FaultKind::kCrashInSave, rank, step);
  const int64_t crash_after = crash && !crash->arg.empty() ? std::stoll(crash->arg) : 0;
  auto on_bytes = [&](const void* p, size_t n) {
    if (crash && written >= crash_after) {
      std::fprintf(stderr,
                   "[switchyard] rank %d: SY_FAULT crash_in_save at step %lld: dying after %lld "
                   "bytes of %s\n",
                   rank, static_cast<long long>(step), static_cast<long long>(written),
                   name.c_str());
      std::fflush(stderr);
      std::raise(SIGKILL);
    }
    h.update(p, n);
    written += static_cast<int64_t>(n);
  };
  const std::string path = dir + "/" + name;
  AtomicWriteOptions opt;
  opt.on_bytes = on_bytes;
  if (const FaultSpec* full = find_fault(FaultKind::kEnospc, rank, step)) {
    // SY_FAULT=enospc: this rank's shards of the step's save fail as on a full disk (after arg
    // bytes of each).
    opt.fail_errno = ENOSPC;
    opt.fail_after = full->arg.empty() ? 0 : static_cast<size_t>(std::stoll(full->arg));
    std::fprintf(stderr, "[switchyard] rank %d: SY_FAULT enospc at step %lld: %s fails\n", rank,
                 static_cast<long long>(step), name.c_str());
  }
  SY_RETURN_IF_ERROR(safetensors_write(path, f.ts, {{"format", "pt"}}, opt));
  rec->bytes = written;
  rec->sha256 = h.hex();
  if (const FaultSpec* flip = find_fault(FaultKind::kBitflipOnWrite, rank, step);
      flip && first_file) {
    const int64_t off = (flip->arg.empty() ? 100 : std::stoll(flip->arg)) % written;
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    unsigned char c = 0;
    if (fd < 0 || ::pread(fd, &c, 1, off) != 1) return Internal(path + ": bitflip fault failed");
    c ^= 1;
    const bool ok = ::pwrite(fd, &c, 1, off) == 1;
    ::close(fd);
    if (!ok) return Internal(path + ": bitflip fault failed");
    std::fprintf(stderr, "[switchyard] rank %d: SY_FAULT bitflip_on_write: byte %lld of %s\n", rank,
                 static_cast<long long>(off), name.c_str());
  }
  return Status::Ok();
}

// Every rank learns whether any rank failed (allreduce max); the local status wins locally.
Status Agree(Communicator* comm, const Status& mine, const char* what, int64_t step) {
  int32_t bad = mine.ok() ? 0 : 1;
  if (comm) comm->allreduce(&bad, 1, ReduceOp::kMax, {what, -1, step});
  if (!mine.ok()) return mine;
  if (bad) return Internal(std::string(what) + ": failed on another rank (see its message)");
  return Status::Ok();
}

struct RankRecord {  // fixed size for the allgather
  char name[72];
  int64_t bytes;
  char sha[72];
};

// A parameter that goes to router.safetensors: a router's (Qwen2-MoE's mlp.gate.*, BERT's
// moe.gate.*).
bool IsRouterParam(const std::string& name) {
  return name.find(".gate.") != std::string::npos;
}

// This rank's routed experts (weights and moments) under their global names.
Status BuildExpertFiles(const SaveRequest& req, FileBuilder* weights, FileBuilder* moments) {
  Model& model = *req.model;
  std::map<std::string, ModelParam> stacked;  // held fp32 experts by stacked name
  for (ModelParam& p : model.parameters())
    if (p.expert) stacked[p.name] = p;
  const auto& moments_by_name = req.optimizer->state().moments;
  for (int64_t li = 0; li < model.num_layers(); ++li) {
    MoeLayer* moe = model.moe_layer(li);
    if (!moe) continue;
    for (const ExpertTensorKind& kind : model.expert_tensor_kinds(li)) {
      const std::vector<int64_t>& shape = kind.shape;
      const int64_t n = Tensor::numel_of(shape);
      const std::string& sname = kind.stacked;
      auto it = stacked.find(sname);
      for (int64_t e = 0; e < moe->num_local_experts(); ++e) {
        const std::string g = kind.global(moe->local_expert_ids()[e]);
        if (it != stacked.end()) {
          weights->add(g, shape, it->second.value->memory(), it->second.value->ptr() + e * n);
        } else {  // frozen and quantized here: the source file has them
          if (!req.source)
            return InvalidArgument("checkpoint: quantized experts need the source checkpoint");
          SY_ASSIGN_OR_RETURN(Tensor t, req.source->read(g, shape));
          weights->add_copy(g, shape, t.data.to_host());
        }
        auto m = moments_by_name.find(sname);
        if (m != moments_by_name.end()) {
          moments->add("exp_avg." + g, shape, m->second.first.memory(),
                       m->second.first.data() + e * n);
          moments->add("exp_avg_sq." + g, shape, m->second.second.memory(),
                       m->second.second.data() + e * n);
        }
      }
    }
  }
  return Status::Ok();
}

// Rank 0's files: replicated weights, routers, their moments, config, state, index, tokenizer.
Status WriteRankZeroFiles(const SaveRequest& req, const std::string& tmp, int P,
                          std::map<std::string, ManifestFile>* files) {
  Model& model = *req.model;
  const int64_t step = req.state.step;
  FileBuilder rep, router, opt;
  json weight_map = json::object();
  int64_t total = 0;
  const auto& moments = req.optimizer->state().moments;
  for (ModelParam& p : model.parameters()) {
    if (p.expert) continue;
    rep.add(p.name, p.value->shape, p.value->memory(), p.value->ptr());
    weight_map[p.name] = kReplicatedFile;
    total += p.value->numel() * 4;
    if (IsRouterParam(p.name))
      router.add(p.name, p.value->shape, p.value->memory(), p.value->ptr());
    auto m = moments.find(p.name);
    if (m != moments.end()) {
      opt.add("exp_avg." + p.name, p.value->shape, m->second.first.memory(),
              m->second.first.data());
      opt.add("exp_avg_sq." + p.name, p.value->shape, m->second.second.memory(),
              m->second.second.data());
    }
  }
  for (int64_t li = 0; li < model.num_layers(); ++li) {
    MoeLayer* moe = model.moe_layer(li);
    if (!moe) continue;
    const int64_t E = moe->config().num_experts, per = E / P;
    for (int64_t j = 0; j < E; ++j)
      for (const ExpertTensorKind& kind : model.expert_tensor_kinds(li)) {
        weight_map[kind.global(j)] = RankFile("model", static_cast<int>(j / per), P);
        total += Tensor::numel_of(kind.shape) * 4;
      }
  }
  SY_RETURN_IF_ERROR(
      WriteHashed(tmp, kReplicatedFile, rep, 0, step, true, &(*files)[kReplicatedFile]));
  if (!router.ts.empty())
    SY_RETURN_IF_ERROR(
        WriteHashed(tmp, kRouterFile, router, 0, step, false, &(*files)[kRouterFile]));
  SY_RETURN_IF_ERROR(
      WriteHashed(tmp, kOptReplicatedFile, opt, 0, step, false, &(*files)[kOptReplicatedFile]));
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  auto put = [&](const std::string& name, const std::string& text) -> Status {
    SY_ASSIGN_OR_RETURN((*files)[name], write_file_hashed(tmp, name, text));
    return Status::Ok();
  };
  SY_RETURN_IF_ERROR(put(kIndexFile, index.dump(1) + "\n"));
  SY_RETURN_IF_ERROR(put("config.json", model.config_json().dump(2) + "\n"));
  SY_RETURN_IF_ERROR(put(kStateFile, req.state.to_json(req.optimizer->step()).dump(1) + "\n"));
  if (req.source) {
    for (const char* t : kTokenizerFiles) {
      const std::string src = req.source->dir() + "/" + t;
      std::error_code ec;
      if (!fs::is_regular_file(src, ec)) continue;
      std::FILE* f = std::fopen(src.c_str(), "rb");
      if (!f) return NotFound(src + ": cannot open");
      std::string text;
      char buf[1 << 16];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
      std::fclose(f);
      SY_RETURN_IF_ERROR(put(t, text));
    }
  }
  return Status::Ok();
}

void FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

json TrainState::to_json(int64_t optimizer_step) const {
  return {{"step", step},
          {"data_position", data_position},
          {"data_seed", data_seed},
          {"world_size", world_size},
          {"optimizer_step", optimizer_step},
          {"run", run}};
}

StatusOr<TrainState> read_train_state(const std::string& dir, int64_t* optimizer_step) {
  const std::string path = dir + "/" + kStateFile;
  SY_ASSIGN_OR_RETURN(json j, read_json_object_file(path));
  auto nonneg = [&](const char* k, int64_t* out) -> Status {
    auto it = j.find(k);
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < 0)
      return BadInput(path + ": \"" + k + "\" must be a non-negative integer");
    *out = it->get<int64_t>();
    return Status::Ok();
  };
  TrainState s;
  int64_t ws = 0;
  SY_RETURN_IF_ERROR(nonneg("step", &s.step));
  SY_RETURN_IF_ERROR(nonneg("data_position", &s.data_position));
  SY_RETURN_IF_ERROR(nonneg("world_size", &ws));
  SY_RETURN_IF_ERROR(nonneg("optimizer_step", optimizer_step));
  if (ws < 1 || ws > (1 << 20)) return BadInput(path + ": \"world_size\" out of range");
  s.world_size = static_cast<int>(ws);
  auto seed = j.find("data_seed");
  if (seed == j.end() || !seed->is_number_unsigned())
    return BadInput(path + ": \"data_seed\" must be an unsigned integer");
  s.data_seed = seed->get<uint64_t>();
  auto run = j.find("run");
  if (run == j.end() || !run->is_object()) return BadInput(path + ": \"run\" must be an object");
  s.run = *run;
  return s;
}

Status save_checkpoint(const SaveRequest& req, Communicator* comm) {
  const int me = comm ? comm->rank() : 0, P = comm ? comm->size() : 1;
  const int64_t step = req.state.step;
  const std::string final_dir = req.root + "/" + checkpoint_folder_name(step);
  const std::string tmp = req.root + "/.tmp-" + checkpoint_folder_name(step);
  Status st;
  if (me == 0) {  // a fresh temporary folder; stale ones of crashed saves go
    std::error_code ec;
    fs::create_directories(req.root, ec);
    if (ec) {
      st = InvalidArgument(req.root + ": cannot create the checkpoint folder: " + ec.message());
    } else {
      for (const auto& e : fs::directory_iterator(req.root, ec))
        if (e.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(e.path(), ec);
      fs::create_directories(tmp, ec);
      if (ec) st = Internal(tmp + ": " + ec.message());
    }
  }
  SY_RETURN_IF_ERROR(Agree(comm, st, "checkpoint.begin", step));

  // Every rank: its experts and their moments.
  std::map<std::string, ManifestFile> files;
  st = [&]() -> Status {
    FileBuilder weights, moments;
    SY_RETURN_IF_ERROR(BuildExpertFiles(req, &weights, &moments));
    if (!weights.ts.empty()) {
      const std::string wn = RankFile("model", me, P), mn = RankFile("optimizer", me, P);
      SY_RETURN_IF_ERROR(WriteHashed(tmp, wn, weights, me, step, me != 0, &files[wn]));
      SY_RETURN_IF_ERROR(WriteHashed(tmp, mn, moments, me, step, false, &files[mn]));
    }
    if (me == 0) SY_RETURN_IF_ERROR(WriteRankZeroFiles(req, tmp, P, &files));
    return Status::Ok();
  }();
  const Status wrote = Agree(comm, st, "checkpoint.write", step);
  if (!wrote.ok()) {
    if (me == 0) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
    return wrote;
  }

  // Rank 0 collects every rank's records, seals the folder with the manifest and publishes it.
  std::vector<RankRecord> mine(kFilesPerRank), all(static_cast<size_t>(kFilesPerRank * P));
  std::memset(mine.data(), 0, mine.size() * sizeof(RankRecord));
  int k = 0;
  for (const auto& [name, f] : files) {
    if (name.find("-experts-") == std::string::npos) continue;
    std::snprintf(mine[k].name, sizeof(mine[k].name), "%s", name.c_str());
    std::snprintf(mine[k].sha, sizeof(mine[k].sha), "%s", f.sha256.c_str());
    mine[k].bytes = f.bytes;
    ++k;
  }
  if (comm)
    comm->allgather_bytes(mine.data(), all.data(), kFilesPerRank * sizeof(RankRecord), 1,
                          {"checkpoint.records", -1, step});
  else
    all = mine;
  st = Status::Ok();
  if (me == 0) {
    st = [&]() -> Status {
      Manifest m;
      m.step = step;
      m.world_size = P;
      m.files = files;
      for (const RankRecord& r : all)
        if (r.name[0]) m.files[r.name] = {r.bytes, r.sha};
      SY_RETURN_IF_ERROR(write_manifest(tmp, m));
      FsyncDir(tmp);
      std::error_code ec;
      fs::remove_all(final_dir, ec);  // a re-save of the same step
      fs::rename(tmp, final_dir, ec);
      if (ec) return Internal("publishing " + final_dir + ": " + ec.message());
      FsyncDir(req.root);
      if (req.keep_last > 0) {
        const auto list = list_checkpoints(req.root);
        for (size_t i = 0; i + static_cast<size_t>(req.keep_last) < list.size(); ++i)
          fs::remove_all(list[i].second, ec);
      }
      return Status::Ok();
    }();
  }
  return Agree(comm, st, "checkpoint.publish", step);
}

Status load_optimizer_state(const std::string& dir, Model& model, int64_t optimizer_step,
                            AdamW* opt) {
  AdamW::State s;
  s.step = optimizer_step;
  if (optimizer_step > 0) {
    // Every optimizer file of the folder (they passed the manifest check), by tensor name.
    std::vector<std::unique_ptr<SafetensorsReader>> readers;
    std::map<std::string, const SafetensorsReader*> where;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("optimizer-", 0) != 0 || e.path().extension() != ".safetensors") continue;
      SY_ASSIGN_OR_RETURN(SafetensorsReader r, SafetensorsReader::Open(e.path().string()));
      readers.push_back(std::make_unique<SafetensorsReader>(std::move(r)));
      for (const SafetensorsEntry& t : readers.back()->tensors())
        where[t.name] = readers.back().get();
    }
    auto read_into = [&](const std::string& name, float* dst, int64_t n) -> Status {
      auto it = where.find(name);
      if (it == where.end()) return BadInput(dir + ": the optimizer state has no '" + name + "'");
      SY_ASSIGN_OR_RETURN(Tensor t, it->second->ReadF32(name));
      if (t.numel() != n)
        return BadInput(dir + ": optimizer tensor '" + name + "' has " + std::to_string(t.numel()) +
                        " values, the parameter " + std::to_string(n));
      std::memcpy(dst, t.ptr(), static_cast<size_t>(n) * sizeof(float));
      return Status::Ok();
    };
    // Stacked expert tensor -> its layer and checkpoint names.
    std::map<std::string, std::pair<MoeLayer*, ExpertTensorKind>> experts;
    for (int64_t li = 0; li < model.num_layers(); ++li)
      if (MoeLayer* l = model.moe_layer(li))
        for (ExpertTensorKind& k : model.expert_tensor_kinds(li)) experts[k.stacked] = {l, k};
    for (ModelParam& p : model.parameters()) {
      if (!p.grad) continue;
      const int64_t n = p.value->numel();
      std::vector<float> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
      auto ex = p.expert ? experts.find(p.name) : experts.end();
      if (ex != experts.end()) {
        MoeLayer* l = ex->second.first;
        const int64_t E = l->num_local_experts(), per = n / E;
        for (int64_t e = 0; e < E; ++e) {
          const std::string g = ex->second.second.global(l->local_expert_ids()[e]);
          SY_RETURN_IF_ERROR(read_into("exp_avg." + g, m.data() + e * per, per));
          SY_RETURN_IF_ERROR(read_into("exp_avg_sq." + g, v.data() + e * per, per));
        }
      } else {
        SY_RETURN_IF_ERROR(read_into("exp_avg." + p.name, m.data(), n));
        SY_RETURN_IF_ERROR(read_into("exp_avg_sq." + p.name, v.data(), n));
      }
      s.moments[p.name] = {DeviceArray<float>(host_memory(), m),
                           DeviceArray<float>(host_memory(), v)};
    }
  }
  opt->set_state(std::move(s));
  return Status::Ok();
}

}  // namespace sy
