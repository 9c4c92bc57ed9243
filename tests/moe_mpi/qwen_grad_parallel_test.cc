// Gradients of the whole Qwen2-MoE decoder on P ranks against 1 rank (issue 5): every rank
// loads the same tiny checkpoint twice, once expert-parallel over the world (E/P experts here)
// and once alone (all experts), runs forward + backward of the language-model loss, and
// compares. Replicated-tokens mode: the logits are bitwise equal (deterministic GEMMs) and every
// gradient agrees within float rounding of the cross-rank sums (routers, shared expert: summed
// over the ranks' token slices). Data-parallel mode (each rank its own sequence): the gradients
// summed over ranks equal one rank's gradient accumulated over all the sequences.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/io/hf_checkpoint.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/loss.h"
#include "runtime/model/qwen2_moe.h"
#include "tests/comm/mpi_test_main.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

MpiCommunicator* g_comm = nullptr;
constexpr int64_t kV = 48, kE = 8;

std::string Checkpoint(const std::string& tag) {
  const std::string dir = TempModelDir("qgradpar_" + tag);
  json cfg = {{"vocab_size", kV},
              {"hidden_size", 32},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"intermediate_size", 24},
              {"moe_intermediate_size", 16},
              {"shared_expert_intermediate_size", 20},
              {"num_experts", kE},
              {"num_experts_per_tok", 2},
              {"initializer_range", 0.2}};
  EXPECT_TRUE(write_random_qwen2_moe_checkpoint(dir, cfg, 31).ok());
  return dir;
}

std::vector<int32_t> Sequence(int64_t T, int64_t salt) {
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < T; ++t) ids.push_back(static_cast<int32_t>((t * 11 + salt * 5 + 1) % kV));
  return ids;
}

// Forward + backward of the summed next-token loss of `ids`, scaled by 1 / n_total.
void Step(Qwen2MoeModel& m, const std::vector<int32_t>& ids, float scale, Tensor* logits) {
  const int64_t T = static_cast<int64_t>(ids.size());
  std::vector<int32_t> targets(ids.begin() + (T > 0 ? 1 : 0), ids.end());
  if (T > 0) targets.push_back(-1);
  m.reset_cache();
  EXPECT_TRUE(m.forward(ids.data(), T, logits).ok());
  std::vector<float> dlogits(logits->data.size());
  if (T > 0) cross_entropy_backward(logits->ptr(), targets.data(), T, kV, scale, dlogits.data());
  EXPECT_TRUE(m.backward(dlogits.data()).ok());
}

// Compares every gradient of `par` (this rank) with `ref` (one rank, all experts).
void CompareGrads(Qwen2MoeModel& par, Qwen2MoeModel& ref, bool sum_replicated_over_ranks) {
  auto pp = par.parameters();
  auto rp = ref.parameters();
  ASSERT_EQ(pp.size(), rp.size());
  const int64_t first = par.moe_layers()[0]->first_local_expert();
  const int64_t local = par.moe_layers()[0]->num_local_experts();
  for (size_t i = 0; i < pp.size(); ++i) {
    ASSERT_EQ(pp[i].name, rp[i].name);
    if (!pp[i].grad) {
      EXPECT_EQ(rp[i].grad, nullptr) << pp[i].name;
      continue;
    }
    std::vector<float> g = pp[i].grad->data;
    const std::vector<float>& r = rp[i].grad->data;
    // Data parallel: replicated gradients cover this rank's tokens; the MoE layer has already
    // summed its routers' and shared expert's over the ranks.
    if (sum_replicated_over_ranks && !pp[i].expert && !pp[i].moe_summed)
      g_comm->allreduce(g.data(), static_cast<int64_t>(g.size()), ReduceOp::kSum,
                        {"test.grad_sum"});
    // Experts: this rank's stacked slice is rows [first, first + E/P) of the reference's.
    const size_t off =
        pp[i].expert ? static_cast<size_t>(first) * (g.size() / static_cast<size_t>(local)) : 0;
    ASSERT_LE(off + g.size(), r.size()) << pp[i].name;
    double scale = 0, worst = 0;
    for (size_t j = 0; j < g.size(); ++j) scale = std::max(scale, std::fabs(double{r[off + j]}));
    for (size_t j = 0; j < g.size(); ++j)
      worst = std::max(worst, std::fabs(double{g[j]} - r[off + j]));
    EXPECT_LE(worst, 1e-5 * scale + 1e-8)
        << pp[i].name << ": max |diff| " << worst << ", max |grad| " << scale;
  }
}

TEST(QwenGradParallel, ReplicatedTokensMatchOneRank) {
  const std::string dir = Checkpoint("rep");
  auto ck = HfCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  for (Qwen2MoeTrain what : {Qwen2MoeTrain::kAll, Qwen2MoeTrain::kRouters}) {
    Qwen2MoeOptions opt;
    opt.exec = sy::make_context("cpu", /*deterministic=*/true);  // row-stable GEMMs
    opt.train = what;
    auto ref = Qwen2MoeModel::load(*ck, opt, nullptr);
    auto par = Qwen2MoeModel::load(*ck, opt, g_comm);
    ASSERT_TRUE(ref.ok() && par.ok());
    const std::vector<int32_t> ids = Sequence(13, 0);
    Tensor lr, lp;
    (*ref)->zero_grad();
    (*par)->zero_grad();
    Step(**ref, ids, 1.0f / 12, &lr);
    Step(**par, ids, 1.0f / 12, &lp);
    EXPECT_EQ(lr.data, lp.data) << "logits of P ranks differ from 1 rank";
    CompareGrads(**par, **ref, /*sum_replicated_over_ranks=*/false);
  }
  fs::remove_all(dir);
}

TEST(QwenGradParallel, DataParallelSequencesSumToOneRank) {
  const std::string dir = Checkpoint("dp");
  auto ck = HfCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  Qwen2MoeOptions opt;
  opt.exec = sy::make_context("cpu", /*deterministic=*/true);  // row-stable GEMMs
  opt.train = Qwen2MoeTrain::kAll;
  auto ref = Qwen2MoeModel::load(*ck, opt, nullptr);
  auto par = Qwen2MoeModel::load(*ck, opt, g_comm);
  ASSERT_TRUE(ref.ok() && par.ok());
  (*par)->set_replicated_tokens(false);
  const int P = g_comm->size(), r = g_comm->rank();
  // Rank p runs sequence p (lengths differ); the loss is the mean over all P sequences' tokens.
  int64_t n_total = 0;
  for (int p = 0; p < P; ++p) n_total += 9 + p - 1;
  const float scale = 1.0f / static_cast<float>(n_total);
  (*ref)->zero_grad();
  (*par)->zero_grad();
  Tensor l;
  for (int p = 0; p < P; ++p) Step(**ref, Sequence(9 + p, p), scale, &l);
  Step(**par, Sequence(9 + r, r), scale, &l);
  CompareGrads(**par, **ref, /*sum_replicated_over_ranks=*/true);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_comm);
}
