#include "launch/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <fstream>
#include <sstream>

#include "launch/default_config.h"  // generated: kDefaultConfigText
#include "routers/registry.h"
#include "runtime/kernels/capacity.h"

namespace sy::launch {
namespace {

namespace pb = google::protobuf;

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

StatusOr<switchyard::RunConfig> parse_run_config(const std::string& text,
                                                 const std::string& origin) {
  switchyard::RunConfig cfg;
  pb::TextFormat::Parser parser;
  Collector errors(origin);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &cfg))
    return InvalidArgument("config " + (errors.first().empty() ? origin : errors.first()));
  return cfg;
}

StatusOr<switchyard::RunConfig> load_run_config(const std::string& path) {
  if (path.empty()) return parse_run_config(default_config_text(), "<default>");
  std::ifstream f(path, std::ios::binary);
  if (!f) return InvalidArgument("cannot open config " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (ss.str().size() > (16u << 20)) return InvalidArgument("config " + path + " is over 16 MiB");
  return parse_run_config(ss.str(), path);
}

Status apply_override(switchyard::RunConfig* cfg, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return InvalidArgument("--set expects a.b=value, got '" + assignment + "'");
  const std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  pb::Message* msg = cfg;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string name =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const pb::FieldDescriptor* field = msg->GetDescriptor()->FindFieldByName(name);
    if (!field)
      return InvalidArgument("--set " + path + ": no field '" + name + "' in " +
                             msg->GetDescriptor()->name());
    if (dot == std::string::npos) {
      if (field->is_repeated() || field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE)
        return InvalidArgument("--set " + path + ": not a scalar field");
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING &&
          (value.empty() || value.front() != '"'))
        value = "\"" + value + "\"";
      if (!pb::TextFormat::ParseFieldValueFromString(value, field, msg))
        return InvalidArgument("--set " + path + ": '" + assignment.substr(eq + 1) +
                               "' is not a valid " + field->type_name());
      return Status::Ok();
    }
    if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated())
      return InvalidArgument("--set " + path + ": '" + name + "' is not a message");
    msg = msg->GetReflection()->MutableMessage(msg, field);
    start = dot + 1;
  }
}

Status validate_run_config(const switchyard::RunConfig& cfg) {
  const auto& d = cfg.data();
  if (d.max_tokens() < 0) return InvalidArgument("data.max_tokens must be >= 0");
  if (d.group_tokens() < 1) return InvalidArgument("data.group_tokens must be >= 1");
  if (d.batch_groups() < 1) return InvalidArgument("data.batch_groups must be >= 1");
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

std::string config_text(const switchyard::RunConfig& cfg) {
  std::string out;
  pb::TextFormat::PrintToString(cfg, &out);
  return out;
}

}  // namespace sy::launch
