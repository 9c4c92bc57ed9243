// Expert FFNs of an MoE layer: E routed experts (SwiGLU, or BERT's GELU FFN) that run on rows
// grouped by expert, and the optional shared expert of Qwen1.5-MoE / Qwen2-MoE that runs on
// every token.
//
//   SwiGLU(x) = down( SiLU(gate x) ⊙ up x ),  gate/up: [F, D], down: [D, F]  (Hugging Face)
//   GeluFFN(x) = fc2 GELU(fc1 x + b1) + b2,    fc1: [F, D], fc2: [D, F]      (BERT's FFN:
//                intermediate.dense = fc1, output.dense = fc2; GELU is the exact erf form,
//                Hugging Face's hidden_act "gelu")
//
// Parameter names and layouts (stacked over experts; a checkpoint loader stacks the per-expert
// Hugging Face tensors `mlp.experts.{e}.gate_proj.weight` [F, D] along a new first axis):
//   experts.gate_proj  [E, F, D]     experts.up_proj  [E, F, D]     experts.down_proj  [E, D, F]
//   GELU experts (kGelu), in this order:
//     experts.fc1 [E, F, D]  experts.fc1_bias [E, F]  experts.fc2 [E, D, F]  experts.fc2_bias
//     [E, D]
//   shared_expert.gate_proj.weight [Fs, D], shared_expert.up_proj.weight [Fs, D],
//   shared_expert.down_proj.weight [D, Fs], shared_expert_gate.weight [1, D]
// (the shared names are Hugging Face's under the `mlp.` prefix). Initialization is N(0, std^2)
// drawn per expert from (seed, name, expert), so a rank that holds a slice of the experts draws
// the same values as one rank that holds them all; init_std = 0 leaves zeros (no draws: fast
// when a checkpoint overwrites the weights anyway). GELU expert biases start at zero (BERT).
//
// Frozen experts (allocate_grads = false) keep an EMPTY Param::grad: at Qwen1.5-MoE size the
// gradients alone would be gigabytes.
//
// Quantized experts (weight_bits 8 or 4, inference / router fine-tuning only): after init the
// fp32 weights are quantized per expert and projection (runtime/kernels/quant.h, groups of
// quant_group input columns) and the fp32 Params are RELEASED: params() is then empty and
// weight_bytes() reports the quantized storage. forward() runs the quantized GEMM; backward()
// still returns dx (the experts are frozen: weight gradients must not be requested), using
// the dequantized weights of one expert at a time. GELU experts quantize fc1 and fc2; their
// biases stay fp32 Params (experts.fc1_bias, experts.fc2_bias: then all that params() holds).
// A loader builds the experts with weight_bits 32 and init_std 0, writes the checkpoint's
// weights into params(), then calls quantize_weights(bits, group).
//
// State: forward() caches pointers to its inputs (the caller keeps them alive and unchanged)
// and the activations backward() needs; backward() differentiates the most recent forward.
// Buffers grow to the largest row count seen and are reused: no allocation in steady state.
//
// Legend: R rows (grouped by expert), T tokens, D hidden, F expert hidden, Fs shared hidden,
// E experts.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/tensor.h"
#include "runtime/kernels/quant.h"

namespace sy {

enum class ExpertKind {
  kSwiGLU,    // the real thing
  kIdentity,  // y = x, no parameters: a test hook (the layer output becomes sum_k w_k x)
  kGelu,      // BERT's FFN: fc2 GELU(fc1 x + b1) + b2 (an upcycled BERT's experts)
};

const char* expert_kind_name(ExpertKind k);

struct ExpertsConfig {
  int64_t d_model = 0;       // D
  int64_t ffn_hidden = 0;    // F
  int64_t num_experts = 0;   // E held here (E/P on an expert-parallel rank)
  int64_t first_expert = 0;  // global id of the first expert held (init streams use global ids)
  // Global id of each expert held, [num_experts], when they are not first_expert + i (a
  // permuted placement, comm/placement.h); empty: first_expert + i.
  std::vector<int32_t> expert_ids;
  ExpertKind kind = ExpertKind::kSwiGLU;
  bool allocate_grads = true;
  float init_std = 0.02f;
  uint64_t seed = 1234;
  int weight_bits = 32;  // 32 (fp32), 8 or 4 (quantized, needs allocate_grads = false)
  int64_t quant_group = kQuantDefaultGroup;  // input columns per scale when quantized
};

// One SwiGLU over R rows with explicit weights. Writes the cache g = gate x, u = up x,
// a = SiLU(g) ⊙ u (all [R, F]) and y_RD = down a.
void swiglu_forward(const ExecContext& c, const float* x_RD, const float* Wg_FD, const float* Wu_FD,
                    const float* Wd_DF, int64_t R, int64_t D, int64_t F, float* g_RF, float* u_RF,
                    float* a_RF, float* y_RD);
// Backward of swiglu_forward. dW* += (skipped when null); dx_RD written, or += when
// accumulate_dx (skipped when null). da_RF and du_RF are [R, F] scratch.
void swiglu_backward(const ExecContext& c, const float* x_RD, const float* Wg_FD,
                     const float* Wu_FD, const float* Wd_DF, const float* g_RF, const float* u_RF,
                     const float* a_RF, const float* dy_RD, int64_t R, int64_t D, int64_t F,
                     float* dWg_FD, float* dWu_FD, float* dWd_DF, float* dx_RD, bool accumulate_dx,
                     float* da_RF, float* du_RF);

// One GELU FFN over R rows with explicit weights (b1_F / b2_D may be null: no bias). Writes
// the cache pre = fc1 x + b1, a = GELU(pre) (both [R, F]) and y_RD. BERT's dense FFN uses it
// too, so an expert that copies it computes the same arithmetic.
void gelu_ffn_forward(const ExecContext& c, const float* x_RD, const float* W1_FD,
                      const float* b1_F, const float* W2_DF, const float* b2_D, int64_t R,
                      int64_t D, int64_t F, float* pre_RF, float* a_RF, float* y_RD);
// Backward of gelu_ffn_forward. dW*, db* += (skipped when null); dx_RD written, or += when
// accumulate_dx (skipped when null). dpre_RF is [R, F] scratch.
void gelu_ffn_backward(const ExecContext& c, const float* x_RD, const float* W1_FD,
                       const float* W2_DF, const float* pre_RF, const float* a_RF,
                       const float* dy_RD, int64_t R, int64_t D, int64_t F, float* dW1_FD,
                       float* db1_F, float* dW2_DF, float* db2_D, float* dx_RD, bool accumulate_dx,
                       float* dpre_RF);

class RoutedExperts {
 public:
  explicit RoutedExperts(const ExpertsConfig& cfg);
  RoutedExperts(const RoutedExperts&) = delete;
  RoutedExperts& operator=(const RoutedExperts&) = delete;

  const ExpertsConfig& config() const { return cfg_; }
  // Where the expert GEMMs run: default_context() until set (MoeLayer hands down its own).
  // Its parameters move into the context's memory (its scratch is made there).
  void set_context(const ExecContext* c);
  // x_RD: rows grouped by expert, expert e owns rows [row_offsets_E1[e], row_offsets_E1[e+1]).
  // y_RD written. x_RD and row_offsets_E1 must stay alive until backward().
  void forward(const float* x_RD, const int32_t* row_offsets_E1, float* y_RD);
  // dy_RD -> dx_RD (written; skipped when null) and, when weight_grads, the expert weight
  // gradients (+=). Quantized experts: weight_grads must be false.
  void backward(const float* dy_RD, float* dx_RD, bool weight_grads);

  // Quantizes the fp32 weights to cfg.weight_bits (8 or 4) and releases the fp32 Params. Done
  // by the constructor when weight_bits != 32; a no-op when already quantized or kIdentity.
  void quantize_weights();
  // Same with these bits (8 or 4) and group, recorded in config(): for loaders that fill fp32
  // weights first (see the top of this file).
  void quantize_weights(int bits, int64_t group);
  bool quantized() const { return !q_gate_.empty() || !q_fc1_.empty(); }
  // SwiGLU: sets local expert e's weights from fp32 matrices (gate/up [F, D], down [D, F]):
  // copied into the fp32 Params, or, when quantized, quantized straight into the expert's
  // storage. Experts built with weight_bits 8/4 and init_std 0 start as quantized zeros and
  // never hold fp32 weights: a checkpoint loader fills them one expert at a time.
  void set_expert_weights(int64_t e, const float* gate_FD, const float* up_FD,
                          const float* down_DF);
  // Per-expert quantized weights (empty unless quantized()): gate/up [F, D], down [D, F].
  const std::vector<QuantizedMatrix>& quantized_gate() const { return q_gate_; }
  const std::vector<QuantizedMatrix>& quantized_up() const { return q_up_; }
  const std::vector<QuantizedMatrix>& quantized_down() const { return q_down_; }
  // GELU experts: fc1 [F, D], fc2 [D, F] per expert (empty unless quantized()).
  const std::vector<QuantizedMatrix>& quantized_fc1() const { return q_fc1_; }
  const std::vector<QuantizedMatrix>& quantized_fc2() const { return q_fc2_; }
  // Bytes of expert weight storage held here: 4 per weight in fp32, else the quantized data
  // plus scales (plus the fp32 biases of GELU experts).
  int64_t weight_bytes() const;

  // Bytes of the reusable activation buffers held now (capacity), for memory reports.
  int64_t buffer_bytes() const;

  // Called with local expert e before its work, for every e in order (empty experts included),
  // by forward() and backward() where they go expert by expert (not a grouping backend's path,
  // nor when there are no rows at all): the MoE layer moves its exchange pipeline along from it
  // (runtime/moe/moe_layer.h). Empty: none.
  void set_expert_hook(std::function<void(int64_t)> hook) { hook_ = std::move(hook); }
  // Seconds the last forward spent outside the GEMMs (the SwiGLU join / the GELU).
  double last_elementwise_seconds() const { return last_elementwise_s_; }

  // Empty for kIdentity and when quantized (GELU: the two biases stay).
  std::deque<Param>& params() { return params_; }
  // Logical weight count, biases included (also when quantized and params() is empty).
  int64_t num_params() const;
  // Multiply-adds x2 per routed row (one token-slot): 3 GEMMs of D x F (SwiGLU), 2 (GELU).
  int64_t flops_per_row() const;

 private:
  void forward_gelu(const float* x_RD, const int32_t* row_offsets_E1, float* y_RD);
  void backward_gelu(const float* dy_RD, float* dx_RD, bool weight_grads);
  void quantize_gelu();

  ExpertsConfig cfg_;
  const ExecContext* exec_ = &default_context();
  std::deque<Param> params_;
  Param* gate_ = nullptr;      // [E, F, D]
  Param* up_ = nullptr;        // [E, F, D]
  Param* down_ = nullptr;      // [E, D, F]
  Param* fc1_ = nullptr;       // [E, F, D] (kGelu)
  Param* fc1_bias_ = nullptr;  // [E, F]
  Param* fc2_ = nullptr;       // [E, D, F]
  Param* fc2_bias_ = nullptr;  // [E, D]
  // Cache of the last forward.
  const float* x_RD_ = nullptr;
  std::vector<int32_t> offsets_E1_;
  DeviceArray<float> g_RF_, u_RF_, a_RF_;
  DeviceArray<float> da_RF_, du_RF_;                     // backward scratch
  std::vector<QuantizedMatrix> q_gate_, q_up_, q_down_;  // [E] when quantized
  std::vector<QuantizedMatrix> q_fc1_, q_fc2_;           // [E] when quantized (kGelu)
  DeviceArray<float> wg_FD_, wu_FD_, wd_DF_;             // dequantized scratch (backward)
  double last_elementwise_s_ = 0.0;
  std::function<void(int64_t)> hook_;
};

// The shared expert: y_TD (+)= sigmoid(w_gate · x_t) * SwiGLU_s(x_t) for every token.
class SharedExpert {
 public:
  SharedExpert(int64_t d_model, int64_t hidden, bool allocate_grads, float init_std, uint64_t seed);
  SharedExpert(const SharedExpert&) = delete;
  SharedExpert& operator=(const SharedExpert&) = delete;

  // Its parameters move into the context's memory (its scratch is made there).
  void set_context(const ExecContext* c);
  // y_TD += gated shared output, except on rows where mask_T is 0 (mask may be null). x_TD
  // and mask_T must stay alive until backward().
  void forward(const float* x_TD, int64_t T, float* y_TD, const uint8_t* mask_T = nullptr);
  // forward() in two halves, the same arithmetic: compute() runs the FFN and the gate logits
  // into the cache, add_output() adds the gated rows into y_TD (the MoE layer computes while
  // its rows are on the wire and adds where forward() would).
  void compute(const float* x_TD, int64_t T, const uint8_t* mask_T = nullptr);
  void add_output(float* y_TD);
  // compute() = compute_hidden() (the gate and up GEMMs, SiLU(g) * u) then compute_output()
  // (the down GEMM, the gate logits): the layer runs one before its routed experts and the
  // other after them.
  void compute_hidden(const float* x_TD, int64_t T, const uint8_t* mask_T = nullptr);
  void compute_output();
  // dx_TD += (skipped when null); weight grads += when weight_grads. Masked rows get nothing.
  void backward(const float* dy_TD, float* dx_TD, bool weight_grads);
  // backward() in three parts, the same arithmetic: backward_weights() computes the gate's and
  // the down projection's weight gradients (when weight_grads) and the SwiGLU's input gradients
  // into scratch; backward_weights_rest() the gate and up projections' weight gradients;
  // backward_dx() adds the dx terms into dx_TD (skipped when null; need_dx false: none), in
  // backward()'s order. The MoE layer runs the first part before its routed experts, the second
  // after them, while rows are on the wire, and the third where backward() would.
  void backward_weights(const float* dy_TD, bool weight_grads, bool need_dx);
  void backward_weights_rest();
  void backward_dx(float* dx_TD);

  std::deque<Param>& params() { return params_; }
  int64_t num_params() const;
  int64_t buffer_bytes() const;  // activation buffers held now (capacity)

 private:
  const ExecContext* exec_ = &default_context();
  int64_t D_, F_;
  std::deque<Param> params_;
  Param *gate_proj_, *up_proj_, *down_proj_, *gate_;
  const float* x_TD_ = nullptr;
  const uint8_t* mask_T_ = nullptr;
  int64_t T_ = 0;
  DeviceArray<float> g_TF_, u_TF_, a_TF_, s_TD_, gate_T_;
  DeviceArray<float> da_TF_, du_TF_, ds_TD_, dlogit_T_;
  bool has_dx_terms_ = false;  // backward_weights left dx terms for backward_dx
  bool weight_grads_ = false;  // backward_weights' weight_grads (and there are tokens)
};

}  // namespace sy
