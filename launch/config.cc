#include "launch/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <memory>
#include <sstream>

#include "launch/default_config.h"  // generated: kDefaultConfigText
#include "routers/registry.h"
#include "runtime/core/file_input.h"
#include "runtime/core/size_check.h"
#include "runtime/kernels/capacity.h"

namespace sy::launch {
namespace {

namespace pb = google::protobuf;

// A config in protobuf text is a few KiB; the cap is checked before the file is read.
constexpr int64_t kMaxConfigFileBytes = int64_t{16} << 20;
// Token counts anywhere in a config (2^40: far above any corpus that fits a machine).
constexpr int64_t kMaxTokensInRun = int64_t{1} << 40;
// A sequence's tokens, and sequences per rank per step.
constexpr int64_t kMaxSeqLen = int64_t{1} << 20;
constexpr int64_t kMaxBatch = int64_t{1} << 20;
// Steps, and the step counts of logging, evaluation and saving.
constexpr int64_t kMaxSteps = int64_t{1} << 31;

class Collector : public pb::io::ErrorCollector {
 public:
  explicit Collector(std::string origin) : origin_(std::move(origin)) {}
  void AddError(int line, pb::io::ColumnNumber col, const std::string& msg) override {
    if (!first_.empty()) return;
    std::ostringstream os;
    os << origin_ << ":" << line + 1 << ":" << col + 1 << ": " << msg;
    first_ = os.str();
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string origin_, first_;
};

}  // namespace

const std::string& default_config_text() {
  static const std::string kText = kDefaultConfigText;
  return kText;
}

Status parse_text_config(const std::string& text, const std::string& origin, pb::Message* msg) {
  pb::TextFormat::Parser parser;
  Collector errors(origin);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, msg))
    return InvalidArgument("config " + (errors.first().empty() ? origin : errors.first()));
  return Status::Ok();
}

Status load_text_config(const std::string& path, pb::Message* msg) {
  SY_ASSIGN_OR_RETURN(std::string text, read_file_bounded(path, kMaxConfigFileBytes, "config"));
  return parse_text_config(text, path, msg);
}

StatusOr<switchyard::RunConfig> parse_run_config(const std::string& text,
                                                 const std::string& origin) {
  switchyard::RunConfig cfg;
  SY_RETURN_IF_ERROR(parse_text_config(text, origin, &cfg));
  return cfg;
}

StatusOr<switchyard::RunConfig> load_run_config(const std::string& path) {
  if (path.empty()) return parse_run_config(default_config_text(), "<default>");
  switchyard::RunConfig cfg;
  SY_RETURN_IF_ERROR(load_text_config(path, &cfg));
  return cfg;
}

Status apply_override(pb::Message* cfg, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return InvalidArgument("--set expects a.b=value, got '" + assignment + "'");
  const std::string path = assignment.substr(0, eq);
  return set_config_field(cfg, path, assignment.substr(eq + 1), "--set " + path,
                          /*literal=*/false);
}

namespace {

// The message holding the last component of `path`, and that component's field; sub-messages
// are created on the way when `create`.
Status find_field(pb::Message* msg, const std::string& path, const std::string& what,
                  pb::Message** holder, const pb::FieldDescriptor** leaf) {
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string name =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const pb::FieldDescriptor* field = msg->GetDescriptor()->FindFieldByName(name);
    if (!field)
      return InvalidArgument(what + ": no field '" + name + "' in " + msg->GetDescriptor()->name());
    if (dot == std::string::npos) {
      if (field->is_repeated() || field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE)
        return InvalidArgument(what + ": not a scalar field");
      *holder = msg;
      *leaf = field;
      return Status::Ok();
    }
    if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated())
      return InvalidArgument(what + ": '" + name + "' is not a message");
    msg = msg->GetReflection()->MutableMessage(msg, field);
    start = dot + 1;
  }
}

}  // namespace

Status set_config_field(pb::Message* cfg, const std::string& path, const std::string& value,
                        const std::string& what, bool literal) {
  pb::Message* msg = nullptr;
  const pb::FieldDescriptor* field = nullptr;
  SY_RETURN_IF_ERROR(find_field(cfg, path, what, &msg, &field));
  std::string text = value;
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING &&
      (literal || text.empty() || text.front() != '"')) {
    text = "\"";
    for (char c : value) {
      if (c == '"' || c == '\\') text += '\\';
      text += c == '\n' ? std::string("\\n") : std::string(1, c);
    }
    text += '"';
  }
  pb::TextFormat::Parser parser;
  Collector quiet(what);  // the error below is the message: protobuf's own log stays quiet
  parser.RecordErrorsTo(&quiet);
  if (!parser.ParseFieldValueFromString(text, field, msg))
    return InvalidArgument(what + ": '" + value + "' is not a valid " + field->type_name());
  return Status::Ok();
}

std::string config_field_text(const pb::Message& cfg, const std::string& path) {
  std::unique_ptr<pb::Message> copy(cfg.New());
  copy->CopyFrom(cfg);
  pb::Message* msg = nullptr;
  const pb::FieldDescriptor* field = nullptr;
  if (!find_field(copy.get(), path, path, &msg, &field).ok()) return "";
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING)
    return msg->GetReflection()->GetString(*msg, field);
  std::string out;
  pb::TextFormat::PrintFieldValueToString(*msg, field, -1, &out);
  return out;
}

std::string config_field_kind(const pb::Message& cfg, const std::string& path) {
  std::unique_ptr<pb::Message> copy(cfg.New());
  pb::Message* msg = nullptr;
  const pb::FieldDescriptor* field = nullptr;
  if (!find_field(copy.get(), path, path, &msg, &field).ok()) return "TEXT";
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT32:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return "INT";
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return "FLOAT";
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return "BOOL";
    default:
      return "TEXT";
  }
}

void fill_defaults(pb::Message* msg) {
  const pb::Reflection* r = msg->GetReflection();
  const pb::Descriptor* d = msg->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      fill_defaults(r->MutableMessage(msg, f));
      continue;
    }
    if (!f->has_presence() || r->HasField(*msg, f)) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(msg, f, f->default_value_int32());
        break;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(msg, f, f->default_value_int64());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(msg, f, f->default_value_uint32());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(msg, f, f->default_value_uint64());
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(msg, f, f->default_value_double());
        break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(msg, f, f->default_value_float());
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(msg, f, f->default_value_bool());
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        r->SetString(msg, f, f->default_value_string());
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnum(msg, f, f->default_value_enum());
        break;
      default:
        break;
    }
  }
}

// The sizes of the synthetic stack, bounded as config.json's are (runtime/model/qwen2_moe.cc),
// and the products the run allocates, without overflow.
Status check_run_sizes(const switchyard::RunConfig& cfg) {
  const auto& d = cfg.data();
  const auto& m = cfg.moe();
  SY_RETURN_IF_ERROR(check_size("data.max_tokens", d.max_tokens(), 0, kMaxTokensInRun));
  SY_RETURN_IF_ERROR(check_size("data.group_tokens", d.group_tokens(), 1, int64_t{1} << 24));
  SY_RETURN_IF_ERROR(check_size("data.batch_groups", d.batch_groups(), 1, int64_t{1} << 24));
  SY_RETURN_IF_ERROR(check_size("moe.num_layers", m.num_layers(), 1, 4096));
  SY_RETURN_IF_ERROR(check_size("moe.d_model", m.d_model(), 1, int64_t{1} << 16));
  SY_RETURN_IF_ERROR(check_size("moe.ffn_hidden", m.ffn_hidden(), 0, int64_t{1} << 20));
  SY_RETURN_IF_ERROR(
      check_size("moe.shared_expert_hidden", m.shared_expert_hidden(), 0, int64_t{1} << 20));
  SY_RETURN_IF_ERROR(check_size("moe.num_experts", m.num_experts(), 1, int64_t{1} << 14));
  SY_RETURN_IF_ERROR(check_size("moe.router.hidden", m.router().hidden(), 0, int64_t{1} << 20));
  SY_RETURN_IF_ERROR(check_size("moe.router.num_heads", m.router().num_heads(), 0, 1024));
  SY_RETURN_IF_ERROR(check_size("moe.quant_group", m.quant_group(), 0, int64_t{1} << 20));
  const int64_t G = d.group_tokens(), B = d.batch_groups();
  SY_RETURN_IF_ERROR(checked_product({{"data.group_tokens", G}, {"data.batch_groups", B}},
                                     int64_t{1} << 26, "tokens per rank per step")
                         .status());
  SY_RETURN_IF_ERROR(
      checked_product(
          {{"data.group_tokens", G}, {"data.batch_groups", B}, {"moe.d_model", m.d_model()}},
          int64_t{1} << 34, "activation values per rank per step")
          .status());
  SY_RETURN_IF_ERROR(checked_product({{"SwiGLU matrices", 3},
                                      {"moe.num_experts", m.num_experts()},
                                      {"moe.d_model", m.d_model()},
                                      {"moe.ffn_hidden", m.ffn_hidden()}},
                                     int64_t{1} << 36, "values in one layer's expert weights")
                         .status());
  return Status::Ok();
}

Status validate_run_config(const switchyard::RunConfig& cfg) {
  SY_RETURN_IF_ERROR(check_run_sizes(cfg));
  if (cfg.comm().collective_timeout_s() < 0)
    return InvalidArgument("comm.collective_timeout_s must be >= 0");
  const std::string& policy = cfg.moe().drop_policy();
  SY_RETURN_IF_ERROR(parse_drop_policy(policy.empty() ? "probs" : policy.c_str()).status());
  const int bits = cfg.moe().expert_bits();
  if (bits != 0 && bits != 32 && bits != 8 && bits != 4)
    return InvalidArgument("moe.expert_bits must be 0 (= 32), 32, 8 or 4 (got " +
                           std::to_string(bits) + ")");
  if (cfg.moe().quant_group() < 0)
    return InvalidArgument("moe.quant_group must be >= 1 (0 = 128), got " +
                           std::to_string(cfg.moe().quant_group()));
  const MoeStackConfig sc = to_stack_config(cfg, 1);
  SY_RETURN_IF_ERROR(sc.validate());
  const RouterConfig rc = sc.layer.resolved_router();
  SY_RETURN_IF_ERROR(validate_router_config(rc));
  if (cfg.moe().router().hash_balanced()) {  // ask the router itself (no names here)
    SY_ASSIGN_OR_RETURN(std::unique_ptr<Router> probe, make_router(rc));
    if (!probe->fits_token_table())
      return InvalidArgument("moe.router.hash_balanced: router '" + rc.name +
                             "' has no token table to fit (the hash router has)");
  }
  return Status::Ok();
}

MoeStackConfig to_stack_config(const switchyard::RunConfig& cfg, int64_t vocab_size) {
  const auto& m = cfg.moe();
  MoeStackConfig sc;
  sc.num_layers = m.num_layers();
  sc.rms_eps = m.rms_eps() > 0 ? m.rms_eps() : 1e-6f;
  sc.embed_seed = m.seed();
  MoeLayerConfig& lc = sc.layer;
  lc.d_model = m.d_model();
  lc.ffn_hidden = m.ffn_hidden();
  lc.num_experts = m.num_experts();
  lc.top_k = m.top_k();
  lc.capacity_factor = m.capacity_factor();
  auto policy = parse_drop_policy(m.drop_policy().empty() ? "probs" : m.drop_policy().c_str());
  lc.drop_policy = policy.ok() ? *policy : DropPolicy::kProbs;
  lc.shared_expert_hidden = m.shared_expert_hidden();
  lc.seed = m.seed();
  lc.expert_bits = m.expert_bits() > 0 ? m.expert_bits() : 32;
  lc.quant_group = m.quant_group() > 0 ? m.quant_group() : 128;
  if (lc.expert_bits != 32) lc.train_experts = false;  // quantized experts: inference only
  lc.router.name = m.router().name().empty() ? kDefaultRouterName : m.router().name();
  lc.router.hidden = m.router().hidden();
  lc.router.num_heads = m.router().num_heads() > 0 ? m.router().num_heads() : 1;
  lc.router.norm_topk_prob = m.router().norm_topk_prob();
  lc.router.init_std = m.router().init_std() > 0 ? m.router().init_std() : 0.02f;
  lc.router.seed = m.router().seed();
  lc.router.vocab_size = vocab_size;  // D, E, K: the layer writes its own (resolved_router)
  return sc;
}

std::string config_text(const pb::Message& cfg) {
  std::string out;
  pb::TextFormat::PrintToString(cfg, &out);
  return out;
}

}  // namespace sy::launch

namespace sy::launch {
namespace {

bool one_of(const std::string& v, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed)
    if (v == a) return true;
  return false;
}

}  // namespace

Status validate_model_infer_config(const switchyard::ModelInferConfig& m) {
  if (m.model().empty()) return InvalidArgument("model.model (--model): a checkpoint folder");
  const bool corpus = m.token_file().empty() && !m.corpus().empty();
  const int given = !m.token_ids().empty() + !m.prompt().empty() + !m.token_file().empty() + corpus;
  if (given != 1)
    return InvalidArgument(
        "--model needs exactly one of --token-ids, --prompt, --token-file, --corpus "
        "(model.token_ids, prompt, token_file, corpus)");
  SY_RETURN_IF_ERROR(check_size("model.seq_len (--seq-len)", m.seq_len(), 0, kMaxSeqLen));
  SY_RETURN_IF_ERROR(
      check_size("model.max_new_tokens (--max-new-tokens)", m.max_new_tokens(), 0, kMaxSeqLen));
  SY_RETURN_IF_ERROR(check_size("model.repeat (--repeat)", m.repeat(), 1, 1 << 20));
  SY_RETURN_IF_ERROR(
      check_size("model.max_tokens (--max-tokens)", m.max_tokens(), INT64_MIN, kMaxTokensInRun));
  SY_RETURN_IF_ERROR(
      check_size("model.upcycle_experts (--upcycle-experts)", m.upcycle_experts(), 0, 1 << 14));
  SY_RETURN_IF_ERROR(check_size("model.moe_every (--moe-every)", m.moe_every(), 0, 1024));
  SY_RETURN_IF_ERROR(
      check_size("model.experts_top_k (--experts-top-k)", m.experts_top_k(), 0, 1 << 14));
  if (m.seq_len() < 0 || (m.seq_len() > 0 && m.token_file().empty() && !corpus))
    return InvalidArgument(
        "model.seq_len (--seq-len) needs --token-file or --corpus (and must be > 0)");
  if (!one_of(m.quantize(), {"none", "int8", "int4"}))
    return InvalidArgument("model.quantize (--quantize) must be none, int8 or int4, not '" +
                           m.quantize() + "'");
  if (m.quant_group() < 1 || m.quant_group() > (int64_t{1} << 20))
    return InvalidArgument("model.quant_group (--quant-group) must be in [1, 2^20]");
  if (m.max_new_tokens() < 0 || m.repeat() < 1 || m.temperature() < 0)
    return InvalidArgument(
        "--max-new-tokens, --repeat and --temperature must be >= 0 (repeat >= 1) "
        "(model.max_new_tokens, repeat, temperature)");
  if (m.seq_len() > 0 && (!m.dump().empty() || m.max_new_tokens() > 0))
    return InvalidArgument(
        "--seq-len runs a corpus: no --dump or --max-new-tokens (model.seq_len with "
        "model.dump, max_new_tokens)");
  if (m.top_k() < 0 || m.upcycle_experts() < 0 || m.moe_every() < 0 || m.experts_top_k() < 0 ||
      m.upcycle_noise() < 0)
    return InvalidArgument(
        "model.top_k, upcycle_experts, moe_every, experts_top_k, upcycle_noise must be >= 0");
  return Status::Ok();
}

// The sizes train and study share: bounded, and a step's tokens (batch x seq_len) and the
// distillation's without overflow.
Status check_step_sizes(const std::string& cmd, int64_t steps, int64_t seq_len, int64_t batch,
                        int64_t eval_tokens, const switchyard::DistillConfigProto& d) {
  SY_RETURN_IF_ERROR(check_size(cmd + ": steps (--steps)", steps, 0, kMaxSteps));
  SY_RETURN_IF_ERROR(check_size(cmd + ": seq_len (--seq-len)", seq_len, 2, kMaxSeqLen));
  SY_RETURN_IF_ERROR(check_size(cmd + ": batch (--batch)", batch, 1, kMaxBatch));
  SY_RETURN_IF_ERROR(
      check_size(cmd + ": eval_tokens (--eval-tokens)", eval_tokens, 2, kMaxTokensInRun));
  SY_RETURN_IF_ERROR(checked_product({{"batch", batch}, {"seq_len", seq_len}}, int64_t{1} << 24,
                                     cmd + ": tokens per rank per step")
                         .status());
  SY_RETURN_IF_ERROR(
      check_size(cmd + ": distill.iterations (--distill-iters)", d.iterations(), 0, kMaxSteps));
  SY_RETURN_IF_ERROR(check_size(cmd + ": distill.max_tokens (--distill-tokens)", d.max_tokens(), 0,
                                int64_t{1} << 24));
  return Status::Ok();
}

Status validate_train_config(const switchyard::TrainConfig& t) {
  if (!one_of(t.what(), {"routers", "all"}))
    return InvalidArgument("train: what (--what) must be routers or all, not '" + t.what() + "'");
  if (t.steps() < 1 || t.seq_len() < 2 || t.batch() < 1 || t.eval_every() < 0 ||
      t.eval_tokens() < 2 || t.save_every() < 0 || t.log_every() < 1 || t.keep_last() < 0)
    return InvalidArgument(
        "train: --steps, --batch, --log-every >= 1, --seq-len, --eval-tokens >= 2, "
        "--save-every, --eval-every, --keep-last >= 0 (fields steps, batch, log_every, seq_len, "
        "eval_tokens, save_every, eval_every, keep_last)");
  SY_RETURN_IF_ERROR(
      check_step_sizes("train", t.steps(), t.seq_len(), t.batch(), t.eval_tokens(), t.distill()));
  SY_RETURN_IF_ERROR(check_size("train: warmup (--warmup)", t.warmup(), 0, kMaxSteps));
  SY_RETURN_IF_ERROR(check_size("train: save_every (--save-every)", t.save_every(), 0, kMaxSteps));
  SY_RETURN_IF_ERROR(check_size("train: eval_every (--eval-every)", t.eval_every(), 0, kMaxSteps));
  SY_RETURN_IF_ERROR(check_size("train: log_every (--log-every)", t.log_every(), 1, kMaxSteps));
  SY_RETURN_IF_ERROR(check_size("train: keep_last (--keep-last)", t.keep_last(), 0, 1 << 20));
  SY_RETURN_IF_ERROR(check_size("train: max_skips (--max-skips)", t.max_skips(), 0, kMaxSteps));
  if ((t.save_every() > 0 || t.resume()) && t.checkpoint_dir().empty())
    return InvalidArgument(
        "train: --save-every and --resume need --checkpoint-dir (save_every, resume, "
        "checkpoint_dir)");
  if (!one_of(t.quantize(), {"none", "int8", "int4"}))
    return InvalidArgument("train: quantize (--quantize) must be none, int8 or int4, not '" +
                           t.quantize() + "'");
  if (t.quantize() != "none" && t.what() == "all")
    return InvalidArgument(
        "train: --what all trains the experts: they must stay fp32 "
        "(--quantize none)");
  if (!one_of(t.on_nonfinite(), {"skip", "stop"}))
    return InvalidArgument("train: on_nonfinite (--on-nonfinite) must be skip or stop, not '" +
                           t.on_nonfinite() + "'");
  if (t.max_skips() < 0) return InvalidArgument("train: max_skips (--max-skips) must be >= 0");
  if (!(t.router_lr_scale() > 0))
    return InvalidArgument("train: router_lr_scale (--router-lr-scale) must be > 0");
  if (!(t.balance_rate() <= 1))
    return InvalidArgument(
        "train: balance_rate (--balance-rate) must be <= 1 (< 0: the checkpoint's)");
  if (t.calibrate_balance() < 0 || t.calibrate_balance() > 100000)
    return InvalidArgument("train: calibrate_balance (--calibrate-balance) must be in [0, 100000]");
  const auto& d = t.distill();
  if (d.iterations() < 0 || !(d.lr() > 0) || d.max_tokens() < 0)
    return InvalidArgument(
        "train: distill.iterations (--distill-iters) >= 0, distill.lr (--distill-lr) > 0, "
        "distill.max_tokens (--distill-tokens) >= 0");
  return Status::Ok();
}

Status validate_study_config(const switchyard::StudyConfig& s) {
  if (s.out().empty()) return InvalidArgument("study: --out DIR (out) is required");
  if (s.routers().empty()) return InvalidArgument("study: --routers (routers) is empty");
  if (s.steps() < 0 || s.seq_len() < 2 || s.batch() < 1 || s.eval_tokens() < 2 ||
      s.latency_repeats() < 1 || s.latency_tokens() < 1)
    return InvalidArgument(
        "study: --steps >= 0, --seq-len >= 2, --batch >= 1, --eval-tokens >= 2, "
        "latency_repeats >= 1, latency_tokens >= 1 (fields steps, seq_len, batch, eval_tokens, "
        "latency_repeats, latency_tokens)");
  SY_RETURN_IF_ERROR(
      check_step_sizes("study", s.steps(), s.seq_len(), s.batch(), s.eval_tokens(), s.distill()));
  SY_RETURN_IF_ERROR(check_size("study: latency_tokens", s.latency_tokens(), 1, int64_t{1} << 24));
  SY_RETURN_IF_ERROR(check_size("study: latency_repeats", s.latency_repeats(), 1, 1 << 20));
  if (!one_of(s.quantize(), {"none", "int8", "int4"}))
    return InvalidArgument("study: quantize (--quantize) must be none, int8 or int4, not '" +
                           s.quantize() + "'");
  if (!(s.lr() > 0)) return InvalidArgument("study: lr (--lr) must be > 0");
  if (!(s.balance_rate() <= 1))
    return InvalidArgument(
        "study: balance_rate (--balance-rate) must be <= 1 (< 0: the checkpoint's)");
  if (s.calibrate_balance() < 0 || s.calibrate_balance() > 100000)
    return InvalidArgument("study: calibrate_balance (--calibrate-balance) must be in [0, 100000]");
  SY_RETURN_IF_ERROR(
      check_size("study: validate_every (--validate-every)", s.validate_every(), 0, 100000));
  SY_RETURN_IF_ERROR(check_size("study: validate_sequences (--validate-sequences)",
                                s.validate_sequences(), 1, 4096));
  const auto& d = s.distill();
  if (d.iterations() < 0 || !(d.lr() > 0) || d.max_tokens() < 0)
    return InvalidArgument(
        "study: distill.iterations (--distill-iters) >= 0, distill.lr > 0, "
        "distill.max_tokens >= 0");
  return Status::Ok();
}

Status validate_tokenize_config(const switchyard::TokenizeConfig& t) {
  for (const auto& [value, name] :
       {std::make_pair(&t.tokenizer(), "tokenizer (--tokenizer)"),
        std::make_pair(&t.corpus(), "corpus (--corpus)"), std::make_pair(&t.out(), "out (--out)")})
    if (value->empty()) return InvalidArgument(std::string(name) + " is required");
  if (t.max_tokens() < 0)
    return InvalidArgument("--max-tokens " + std::to_string(t.max_tokens()) + " < 0 (max_tokens)");
  return Status::Ok();
}

Status validate_routers_config(const switchyard::RoutersConfig& r) {
  if (r.d_model() < 1 || r.experts() < 1 || r.top_k() < 1 || r.top_k() > r.experts() ||
      r.hidden() < 0 || r.vocab() < 1)
    return InvalidArgument(
        "d_model, experts, vocab must be >= 1, top_k in [1, experts], hidden >= 0");
  return Status::Ok();
}

Status validate_compare_config(const switchyard::CompareConfig& c) {
  for (const auto& [value, name] : {std::make_pair(&c.a(), "a (first positional)"),
                                    std::make_pair(&c.b(), "b (second positional)")})
    if (value->empty()) return InvalidArgument(std::string(name) + " is required");
  if (!(c.atol() >= 0) || !(c.rtol() >= 0))
    return InvalidArgument("atol (--atol) and rtol (--rtol) must be >= 0");
  return Status::Ok();
}

Status validate_report_config(const switchyard::ReportConfig& r) {
  if (r.dir().empty()) return InvalidArgument("dir (positional DIR) is required");
  if (r.warmup() < 0) return InvalidArgument("warmup (--warmup) must be >= 0");
  for (const std::string& d : r.more_dirs())
    if (d.empty()) return InvalidArgument("more_dirs: an empty folder name");
  return Status::Ok();
}

}  // namespace sy::launch
