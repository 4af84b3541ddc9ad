#include "model/direct_program.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace hapi {
namespace {

using dnnl::memory;
using Md = memory::desc;
using Dims = memory::dims;

const dnnl::engine& Engine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

std::atomic<int> g_threads{0};

// The calling thread's stream, with its OpenMP team size set as
// SetDirectThreads says (each thread has its own).
dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  thread_local int threads = 0;
  const int want = g_threads.load(std::memory_order_relaxed);
  if (want > 0 && want != threads) {
    omp_set_num_threads(want);
    threads = want;
  }
  return stream;
}

// 64-byte aligned bytes; Reserve keeps nothing when it grows.
class Buffer {
 public:
  void Reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    bytes_ = (bytes + 63) / 64 * 64;
    data_.reset(static_cast<char*>(std::aligned_alloc(64, bytes_)));
  }
  char* data() const { return data_.get(); }
  void Swap(Buffer& other) {
    data_.swap(other.data_);
    std::swap(bytes_, other.bytes_);
  }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> data_;
  size_t bytes_ = 0;
};

memory::format_tag PlainTag(size_t rank) {
  switch (rank) {
    case 1:
      return memory::format_tag::a;
    case 2:
      return memory::format_tag::ab;
    case 3:
      return memory::format_tag::abc;
    case 5:
      return memory::format_tag::abcde;
    default:
      return memory::format_tag::abcd;
  }
}

Md PlainMd(const Dims& dims) { return Md(dims, memory::data_type::f32, PlainTag(dims.size())); }
// N x C x H x W with channels innermost (acdb).
Md NhwcMd(const Dims& dims) { return Md(dims, memory::data_type::f32, memory::format_tag::nhwc); }
Md AnyMd(const Dims& dims) { return Md(dims, memory::data_type::f32, memory::format_tag::any); }

// The batch with the per-sample shape behind it.
Dims Batched(int64_t n, const std::vector<int64_t>& shape) {
  Dims dims = {n};
  dims.insert(dims.end(), shape.begin(), shape.end());
  return dims;
}

// True when each sample of `md` is one contiguous run of bytes, samples in
// order (the batch is the outermost, unblocked dimension).
bool RowsContiguous(const Md& md) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind != dnnl_blocked || d.offset0 != 0 || d.padded_dims[0] != d.dims[0]) {
    return false;
  }
  for (int i = 0; i < d.format_desc.blocking.inner_nblks; ++i) {
    if (d.format_desc.blocking.inner_idxs[i] == 0) return false;
  }
  return static_cast<size_t>(d.format_desc.blocking.strides[0] * d.dims[0]) *
             memory::data_type_size(md.data_type()) ==
         md.get_size();
}

// `md` with elements of type `t` (same layout).
Md WithType(const Md& md, memory::data_type t) {
  dnnl_memory_desc_t d = md.data;
  d.data_type = static_cast<dnnl_data_type_t>(t);
  return Md(d);
}

// `md` (RowsContiguous) for a batch of `n`.
Md WithBatch(const Md& md, int64_t n) {
  dnnl_memory_desc_t d = md.data;
  d.dims[0] = d.padded_dims[0] = n;
  return Md(d);
}

void RunReorder(const Md& from, const void* src, const Md& to, void* dst) {
  dnnl::stream& stream = ThreadStream();
  memory a(from, Engine(), const_cast<void*>(src)), b(to, Engine(), dst);
  dnnl::reorder(a, b).execute(stream, a, b);
  stream.wait();
}

class DirectActivations final : public Activations {
 public:
  int batch_size() const override { return static_cast<int>(md.data.dims[0]); }

  void KeepRows(const std::vector<int>& rows) override {
    if (!RowsContiguous(md)) {
      const Md plain(md.dims(), md.data_type(), PlainTag(md.dims().size()));
      spare.Reserve(plain.get_size());
      RunReorder(md, cur.data(), plain, spare.data());
      cur.Swap(spare);
      md = plain;
    }
    const size_t row = batch_size() == 0 ? 0 : md.get_size() / batch_size();
    for (size_t k = 0; k < rows.size(); ++k) {
      if (static_cast<size_t>(rows[k]) != k) {
        std::memmove(cur.data() + k * row, cur.data() + rows[k] * row, row);
      }
    }
    md = WithBatch(md, static_cast<int64_t>(rows.size()));
  }

  Md md;
  Buffer cur, spare;
};

// --- Plans ---------------------------------------------------------------------

// Where a tensor of a plan lives: the activations' buffer the call reads
// (kInput), the one it writes (kOutput), or the thread context's workspace.
enum class Place { kInput, kOutput, kWork };

struct StorageClass {
  Place place = Place::kWork;
  size_t bytes = 0;
  size_t offset = 0;  // kWork: into the workspace
  int last_use = -1;  // the last node reading any tensor of the class
};

struct PlanTensor {
  Md md;
  int cls = 0;
  float scale = 1;  // int8 tensors: quantised = real x scale
};

struct Step {
  dnnl::primitive primitive;
  std::vector<std::pair<int, int>> tensors;       // (DNNL_ARG_*, plan tensor)
  std::vector<std::pair<int, memory>> constants;  // weights, bias, constant operands
  Md scratchpad;
};

// The memory objects of one plan bound to one thread's buffers.
struct Context {
  Buffer workspace, scratchpad;
  std::vector<memory> tensors;
  std::vector<std::unordered_map<int, memory>> args;  // per step
};

// A segment (or a head) compiled for one input layout.
struct Plan {
  Md input;
  std::vector<PlanTensor> tensors;
  std::vector<StorageClass> classes;
  std::vector<Step> steps;
  int output = 0;  // plan tensor
  size_t workspace = 0, scratchpad = 0;
  std::map<std::string, int> named;  // graph tensor -> plan tensor

  const Md& output_md() const { return tensors[output].md; }
  size_t output_bytes() const { return classes[tensors[output].cls].bytes; }
  bool output_in_input() const { return classes[tensors[output].cls].place == Place::kInput; }

  mutable absl::Mutex mu;
  mutable std::vector<std::unique_ptr<Context>> idle ABSL_GUARDED_BY(mu);

  std::unique_ptr<Context> Acquire() const {
    {
      absl::MutexLock lock(&mu);
      if (!idle.empty()) {
        std::unique_ptr<Context> c = std::move(idle.back());
        idle.pop_back();
        return c;
      }
    }
    auto c = std::make_unique<Context>();
    c->workspace.Reserve(std::max<size_t>(workspace, 64));
    c->scratchpad.Reserve(std::max<size_t>(scratchpad, 64));
    for (const PlanTensor& t : tensors) {
      const StorageClass& s = classes[t.cls];
      void* handle = s.place == Place::kWork ? c->workspace.data() + s.offset : nullptr;
      c->tensors.emplace_back(t.md, Engine(), handle);
    }
    for (const Step& step : steps) {
      std::unordered_map<int, memory> args;
      for (const auto& [arg, t] : step.tensors) args.emplace(arg, c->tensors[t]);
      for (const auto& [arg, m] : step.constants) args.emplace(arg, m);
      args.emplace(DNNL_ARG_SCRATCHPAD, memory(step.scratchpad, Engine(), c->scratchpad.data()));
      c->args.push_back(std::move(args));
    }
    return c;
  }
  void Release(std::unique_ptr<Context> c) const {
    absl::MutexLock lock(&mu);
    idle.push_back(std::move(c));
  }

  // Runs every step, reading `in` and writing `out`; then `observe` sees the
  // thread context's memory objects (when the plan keeps every tensor).
  void Run(const void* in, void* out,
           const std::function<void(const std::vector<memory>&)>& observe = nullptr) const {
    std::unique_ptr<Context> c = Acquire();
    for (size_t t = 0; t < tensors.size(); ++t) {
      const Place place = classes[tensors[t].cls].place;
      if (place == Place::kInput) c->tensors[t].set_data_handle(const_cast<void*>(in));
      if (place == Place::kOutput) c->tensors[t].set_data_handle(out);
    }
    dnnl::stream& stream = ThreadStream();
    for (size_t i = 0; i < steps.size(); ++i) steps[i].primitive.execute(stream, c->args[i]);
    stream.wait();
    if (observe) observe(c->tensors);
    Release(std::move(c));
  }
};

// Weights reordered once into the layout a primitive asks for, shared by
// every plan (a batch size rarely changes the layout).
class WeightCache {
 public:
  memory Get(const Weight& w, const Md& user, const Md& packed) {
    return Get(
        &w, 0, [&] { return static_cast<const void*>(w.values.data()); }, user, packed);
  }
  // Weights derived from `key` (kind > 0: e.g. quantised), made by `data`
  // only when not cached yet.
  template <typename Data>
  memory Get(const void* key, int kind, Data data, const Md& user, const Md& packed) {
    for (const Entry& e : entries_) {
      if (e.key == key && e.kind == kind && e.md == packed) return e.packed;
    }
    memory m(packed, Engine());
    RunReorder(user, data(), packed, m.get_data_handle());
    entries_.push_back({key, kind, packed, m});
    return m;
  }

 private:
  struct Entry {
    const void* key;
    int kind;
    Md md;
    memory packed;
  };
  std::vector<Entry> entries_;
};

// The eltwise ops of an activation, in order.
struct Eltwise {
  dnnl::algorithm algorithm;
  float alpha = 0, beta = 0;
};
std::vector<Eltwise> EltwiseOps(const Activation& a) {
  using dnnl::algorithm;
  switch (a.kind) {
    case ActivationKind::kNone:
      return {};
    case ActivationKind::kRelu:
      return {{algorithm::eltwise_relu}};
    case ActivationKind::kClip:
      return {{algorithm::eltwise_clip, a.alpha, a.beta}};
    case ActivationKind::kSigmoid:
      return {{algorithm::eltwise_logistic}};
    case ActivationKind::kHardSigmoid:
      return {{algorithm::eltwise_linear, a.alpha, a.beta}, {algorithm::eltwise_clip, 0.f, 1.f}};
    case ActivationKind::kHardSwish:
      return {{algorithm::eltwise_hardswish}};
  }
  return {};
}

dnnl::primitive_attr Attr(const std::vector<Eltwise>& activation, bool sum = false) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops ops;
  if (sum) ops.append_sum(1.f);
  for (const Eltwise& e : activation) ops.append_eltwise(1.f, e.algorithm, e.alpha, e.beta);
  attr.set_post_ops(ops);
  return attr;
}

// An Add whose operand `conv` (a Conv node read by nothing else, without an
// activation) runs at the Add's position with a sum post-op over `other`.
struct FusedAdd {
  int conv = -1;
  std::string other;
};

// Compiles one segment (or head) for one input layout.
class Compiler {
 public:
  // `int8_max`: the largest |value| of each graph tensor on calibration
  // data; given, convolutions run in int8 (u8 after ReLU, else s8; weights s8
  // per output channel) and everything else in fp32. `observe`: no tensor
  // shares storage, so all can be read after a run.
  Compiler(const ImportedGraph& graph, WeightCache& weights,
           const std::map<std::string, float>* int8_max = nullptr, bool observe = false)
      : g_(graph), weights_(weights), int8_max_(int8_max), observe_(observe) {
    for (size_t i = 0; i < g_.nodes.size(); ++i)
      producer_[g_.nodes[i].output] = static_cast<int>(i);
  }

  absl::StatusOr<std::unique_ptr<Plan>> Segment(const GraphSegment& seg, const Md& input,
                                                bool writable, bool plain_output) {
    Start(input, writable);
    std::map<std::string, int> uses;
    for (const GraphNode& n : g_.nodes) {
      for (const auto& in : n.inputs) ++uses[in];
    }
    std::map<int, FusedAdd> fused;  // by Add node
    std::map<int, bool> deferred;   // Conv nodes run by an Add
    for (int i = seg.begin; i < seg.end; ++i) {
      for (const auto& in : g_.nodes[i].inputs) last_use_[in] = i;
      FusedAdd f = FindFusion(seg, i, uses);
      if (f.conv >= 0) {
        deferred[f.conv] = true;
        for (const auto& in : g_.nodes[f.conv].inputs) last_use_[in] = i;
        fused[i] = std::move(f);
      }
    }
    last_use_[seg.output] = std::numeric_limits<int>::max();
    Bind(seg.input, 0);
    if (MdOf(0).data_type() != memory::data_type::f32) {
      HAPI_ASSIGN_OR_RETURN(plan_->tensors[0].scale, Multiplier(seg.input));
    }
    for (int i = seg.begin; i < seg.end; ++i) {
      if (deferred.count(i)) continue;
      const GraphNode& n = g_.nodes[i];
      auto f = fused.find(i);
      absl::Status status = f != fused.end() ? Conv(f->second.conv, i, &f->second) : Node(i);
      if (!status.ok()) {
        return absl::UnimplementedError(
            absl::StrCat("node '", n.name, "' (", n.op_type, "): ", status.message()));
      }
    }
    int out = tensor_.at(seg.output);
    if (plain_output && plan_->tensors[out].md != PlainMd(plan_->tensors[out].md.dims())) {
      out = Reorder(out, PlainMd(plan_->tensors[out].md.dims()));
    }
    return Finish(out);
  }

  // A head of model/network.h's family up to its pooling: the conv (+ ReLU)
  // output, or the stage output itself, as fp32 NHWC (AdaptivePoolNhwc).
  absl::StatusOr<std::unique_ptr<Plan>> Head(const ExitHeadWeights& h, const Md& input,
                                             const std::string& input_name) {
    Start(input, /*writable=*/false);
    if (input.data_type() != memory::data_type::f32) {
      HAPI_ASSIGN_OR_RETURN(plan_->tensors[0].scale, Multiplier(input_name));
    }
    const Dims in = input.dims();
    const bool int8 = input.data_type() != memory::data_type::f32;
    int out = 0;
    if (h.conv_weight.numel() > 0) {
      const Dims out_dims = {in[0], h.conv_weight.dims[0], (in[2] - 1) / 2 + 1,
                             (in[3] - 1) / 2 + 1};
      const std::vector<Eltwise> relu = {{dnnl::algorithm::eltwise_relu}};
      // In the layout the convolution likes (a plain destination makes
      // oneDNN fall back to im2col + GEMM), then NHWC for the pooling loop.
      if (int8) {  // an int8 stage output: the head's convolution in int8 too
        out = EmitConvInt8(0, h.conv_weight, h.conv_bias, {{2, 2}, {0, 0}, {1, 1}, {1, 1}, 1},
                           out_dims, relu, memory::data_type::f32, 1.f, std::nullopt);
      } else {
        auto pd = dnnl::convolution_forward::primitive_desc({dnnl::prop_kind::forward_inference,
                                                             dnnl::algorithm::convolution_direct,
                                                             AnyMd(in),
                                                             AnyMd(ToDims(h.conv_weight.dims)),
                                                             PlainMd({h.conv_weight.dims[0]}),
                                                             AnyMd(out_dims),
                                                             {2, 2},
                                                             {0, 0},
                                                             {1, 1},
                                                             {1, 1}},
                                                            Attr(relu), Engine());
        out = EmitConv(pd, 0, h.conv_weight, 1, h.conv_bias, -1);
      }
      if (MdOf(out) != NhwcMd(out_dims)) out = Reorder(out, NhwcMd(out_dims));
    } else {
      out = Reorder(0, NhwcMd(in), int8 ? 1 / plan_->tensors[0].scale : 1.f);
    }
    return Finish(out);
  }

 private:
  void Start(const Md& input, bool writable) {
    plan_ = std::make_unique<Plan>();
    plan_->input = input;
    writable_ = writable;
    tensor_.clear();
    last_use_.clear();
    node_ = -1;
    NewTensor(input);
    plan_->classes[0].place = Place::kInput;
  }

  std::unique_ptr<Plan> Finish(int out) {
    if (!writable_ && plan_->classes[plan_->tensors[out].cls].place == Place::kInput) {
      out = CopyInto(out, NewTensor(MdOf(out)));
    }
    plan_->output = out;
    plan_->named = tensor_;
    StorageClass& c = plan_->classes[plan_->tensors[out].cls];
    if (c.place == Place::kWork) c.place = Place::kOutput;
    size_t offset = 0;
    for (StorageClass& s : plan_->classes) {
      if (s.place != Place::kWork) continue;
      s.offset = offset;
      offset += (s.bytes + 63) / 64 * 64;
    }
    plan_->workspace = offset;
    return std::move(plan_);
  }

  static Dims ToDims(const std::vector<int64_t>& v) { return Dims(v.begin(), v.end()); }

  FusedAdd FindFusion(const GraphSegment& seg, int i, const std::map<std::string, int>& uses) {
    const GraphNode& n = g_.nodes[i];
    FusedAdd best;
    if (n.op != GraphOp::kAdd || n.inputs.size() != 2 || n.inputs[0] == n.inputs[1]) return best;
    const auto& out_shape = g_.shapes.at(n.output);
    int64_t best_macs = -1;
    for (int k = 0; k < 2; ++k) {
      const std::string& t = n.inputs[k];
      const std::string& other = n.inputs[1 - k];
      if (g_.shapes.at(t) != out_shape || g_.shapes.at(other) != out_shape) return {};
      for (int j = seg.begin; j < i; ++j) {
        const GraphNode& c = g_.nodes[j];
        if (c.output == t && c.op == GraphOp::kConv && c.activation.kind == ActivationKind::kNone &&
            uses.at(t) == 1 && t != seg.output && t != g_.output && c.macs > best_macs) {
          best = {j, other};
          best_macs = c.macs;
        }
      }
    }
    return best;
  }

  int NewTensor(const Md& md) {
    StorageClass c;
    c.bytes = md.get_size();
    c.last_use = node_;
    plan_->classes.push_back(c);
    plan_->tensors.push_back({md, static_cast<int>(plan_->classes.size()) - 1});
    return static_cast<int>(plan_->tensors.size()) - 1;
  }
  // A tensor over the storage of `of` (same bytes, maybe another layout).
  int View(int of, const Md& md) {
    plan_->tensors.push_back({md, plan_->tensors[of].cls});
    return static_cast<int>(plan_->tensors.size()) - 1;
  }
  // True when node `node_` may overwrite `t`: nothing reads its storage later.
  bool Overwritable(int t) const {
    const StorageClass& c = plan_->classes[plan_->tensors[t].cls];
    return !observe_ && c.last_use <= node_ && (c.place != Place::kInput || writable_);
  }
  // Graph tensor `name` produced as plan tensor `t`.
  void Bind(const std::string& name, int t) {
    tensor_[name] = t;
    StorageClass& c = plan_->classes[plan_->tensors[t].cls];
    c.last_use = std::max(c.last_use, last_use_.count(name) ? last_use_.at(name) : node_);
  }
  int Input(const std::string& name) const { return tensor_.at(name); }
  // Graph tensor `name` as fp32 (dequantised when int8).
  int InputF32(const std::string& name) { return AsF32(Input(name)); }

  int AsF32(int t) {
    if (MdOf(t).data_type() == memory::data_type::f32) return t;
    return Reorder(t, WithType(MdOf(t), memory::data_type::f32), 1 / plan_->tensors[t].scale);
  }
  // True when graph tensor `name` is never negative (its producer ends in
  // ReLU, a Clip at >= 0, or a sigmoid).
  bool NonNegative(const std::string& name) const {
    auto p = producer_.find(name);
    if (p == producer_.end()) return false;
    const Activation& a = g_.nodes[p->second].activation;
    return a.kind == ActivationKind::kRelu || a.kind == ActivationKind::kSigmoid ||
           a.kind == ActivationKind::kHardSigmoid ||
           (a.kind == ActivationKind::kClip && a.alpha >= 0);
  }
  memory::data_type Int8Type(const std::string& name) const {
    return NonNegative(name) ? memory::data_type::u8 : memory::data_type::s8;
  }
  // Quantised = real x Multiplier(name): the calibrated range onto 255 (u8)
  // or 127 (s8).
  absl::StatusOr<float> Multiplier(const std::string& name) const {
    if (int8_max_ == nullptr || int8_max_->count(name) == 0) {
      return absl::UnimplementedError(absl::StrCat("no int8 range for tensor '", name, "'"));
    }
    return (NonNegative(name) ? 255.f : 127.f) / std::max(int8_max_->at(name), 1e-6f);
  }
  // Graph tensor `name` (plan tensor t) as int8.
  absl::StatusOr<int> AsInt8(int t, const std::string& name) {
    if (MdOf(t).data_type() != memory::data_type::f32) return t;
    HAPI_ASSIGN_OR_RETURN(const float m, Multiplier(name));
    return Reorder(t, WithType(MdOf(t), Int8Type(name)), m);
  }
  const Md& MdOf(int t) const { return plan_->tensors[t].md; }

  void AddStep(dnnl::primitive p, const Md& scratchpad, std::vector<std::pair<int, int>> tensors,
               std::vector<std::pair<int, memory>> constants = {}) {
    plan_->scratchpad = std::max(plan_->scratchpad, scratchpad.get_size());
    plan_->steps.push_back({std::move(p), std::move(tensors), std::move(constants), scratchpad});
  }

  // `t` in layout and type `md`, multiplied by `multiply` (quantising or
  // dequantising); the result's scale is t's times `multiply`.
  int Reorder(int t, const Md& md, float multiply = 1) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (multiply != 1) attr.set_output_scales(0, {multiply});
    auto pd = dnnl::reorder::primitive_desc(Engine(), MdOf(t), Engine(), md, attr);
    const int out = NewTensor(md);
    plan_->tensors[out].scale = plan_->tensors[t].scale * multiply;
    AddStep(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, t}, {DNNL_ARG_TO, out}});
    return out;
  }

  // The convolution `pd` on plan tensor `src`; with `sum_into` >= 0 its
  // result is added to that tensor's values (sum post-op).
  int EmitConv(const dnnl::convolution_forward::primitive_desc& pd, int src, const Weight& w,
               int64_t groups, const Weight& bias, int sum_into) {
    if (MdOf(src) != pd.src_desc()) src = Reorder(src, pd.src_desc());
    Dims user = ToDims(w.dims);
    memory::format_tag tag = memory::format_tag::oihw;
    if (groups > 1) {
      user = {groups, user[0] / groups, user[1], user[2], user[3]};
      tag = memory::format_tag::goihw;
    }
    const memory packed = weights_.Get(w, Md(user, memory::data_type::f32, tag), pd.weights_desc());
    std::vector<std::pair<int, memory>> constants = {{DNNL_ARG_WEIGHTS, packed}};
    if (bias.numel() > 0) {
      constants.push_back(
          {DNNL_ARG_BIAS, weights_.Get(bias, PlainMd({bias.numel()}), PlainMd({bias.numel()}))});
    }
    int dst;
    if (sum_into < 0) {
      dst = NewTensor(pd.dst_desc());
    } else if (Overwritable(sum_into) && MdOf(sum_into) == pd.dst_desc()) {
      dst = View(sum_into, pd.dst_desc());
    } else {
      dst = Reorder(sum_into, pd.dst_desc());
    }
    AddStep(dnnl::convolution_forward(pd), pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, std::move(constants));
    return dst;
  }

  // Conv node `c`, run at node `at` (an Add it is fused into, or itself).
  absl::Status Conv(int c, int at, const FusedAdd* fused) {
    node_ = at;
    if (int8_max_ != nullptr) return ConvInt8(c, at, fused);
    const GraphNode& n = g_.nodes[c];
    const GraphNode& out_node = g_.nodes[at];
    const int src = InputF32(n.inputs[0]);
    const Dims in = MdOf(src).dims();
    const Dims out_dims = Batched(in[0], g_.shapes.at(n.output));
    Dims wdims = ToDims(n.weights[0].dims);
    if (n.group > 1) wdims = {n.group, wdims[0] / n.group, wdims[1], wdims[2], wdims[3]};
    const Md bias_md = n.weights.size() > 1 ? PlainMd({n.weights[1].numel()}) : Md();
    auto pd = dnnl::convolution_forward::primitive_desc(
        {dnnl::prop_kind::forward_inference,
         dnnl::algorithm::convolution_direct,
         AnyMd(in),
         AnyMd(wdims),
         bias_md,
         AnyMd(out_dims),
         {n.strides[0], n.strides[1]},
         {n.dilations[0] - 1, n.dilations[1] - 1},
         {n.pads[0], n.pads[1]},
         {n.pads[2], n.pads[3]}},
        Attr(EltwiseOps(out_node.activation), fused != nullptr), Engine());
    static const Weight kNoBias;
    const int sum_into = fused != nullptr ? InputF32(fused->other) : -1;
    const int dst = EmitConv(pd, src, n.weights[0], n.group,
                             n.weights.size() > 1 ? n.weights[1] : kNoBias, sum_into);
    Bind(out_node.output, dst);
    return absl::OkStatus();
  }

  // Conv node `c` in int8, run at node `at`: src u8/s8 (quantised with its
  // calibrated range), weights s8 with one scale per output channel, bias
  // f32 folded into the accumulator's scale, output scales onto the
  // destination's range, the residual (sum post-op) in its own int8 type.
  absl::Status ConvInt8(int c, int at, const FusedAdd* fused) {
    const GraphNode& n = g_.nodes[c];
    const GraphNode& out_node = g_.nodes[at];
    HAPI_ASSIGN_OR_RETURN(const int src, AsInt8(Input(n.inputs[0]), n.inputs[0]));
    HAPI_ASSIGN_OR_RETURN(const float m_out, Multiplier(out_node.output));
    std::optional<int> residual;
    if (fused != nullptr) {
      HAPI_ASSIGN_OR_RETURN(residual, AsInt8(Input(fused->other), fused->other));
    }
    const ConvGeometry geometry{{n.strides[0], n.strides[1]},
                                {n.dilations[0] - 1, n.dilations[1] - 1},
                                {n.pads[0], n.pads[1]},
                                {n.pads[2], n.pads[3]},
                                n.group};
    static const Weight kNoBias;
    const int dst =
        EmitConvInt8(src, n.weights[0], n.weights.size() > 1 ? n.weights[1] : kNoBias, geometry,
                     Batched(MdOf(src).dims()[0], g_.shapes.at(n.output)),
                     EltwiseOps(out_node.activation), Int8Type(out_node.output), m_out, residual);
    Bind(out_node.output, dst);
    return absl::OkStatus();
  }

  // Per output channel: 127 / max |weight|, so each channel spans the s8
  // range.
  static std::vector<float> ChannelMultipliers(const Weight& w) {
    const int64_t out_channels = w.dims[0], per_channel = w.numel() / out_channels;
    std::vector<float> m(out_channels);
    for (int64_t o = 0; o < out_channels; ++o) {
      const auto first = w.values.begin() + o * per_channel;
      float max = 0;
      for (auto v = first; v != first + per_channel; ++v) max = std::max(max, std::abs(*v));
      m[o] = 127.f / std::max(max, 1e-12f);
    }
    return m;
  }

  struct ConvGeometry {
    Dims strides, dilates, pad_l, pad_r;
    int64_t group = 1;
  };

  // An int8 convolution's output scales and post-ops. oneDNN applies the
  // output scales before the post-ops, so the activation sees the scaled
  // accumulator. ReLU commutes with a positive scale; Clip (ReLU6), the
  // sigmoids and HardSwish do not: they run on real values (output scales
  // that only dequantise, the residual summed in real units), and the last
  // one's result is quantised (its scale).
  dnnl::primitive_attr Int8ConvAttr(float m_src, const std::vector<float>& m_w, float m_out,
                                    const std::vector<Eltwise>& activation,
                                    std::optional<int> residual) const {
    const bool scale_first =
        activation.empty() ||
        (activation.size() == 1 && activation[0].algorithm == dnnl::algorithm::eltwise_relu &&
         activation[0].alpha == 0.f);
    const float m_scale = scale_first ? m_out : 1.f;
    std::vector<float> scales(m_w.size());
    for (size_t o = 0; o < m_w.size(); ++o) scales[o] = m_scale / (m_src * m_w[o]);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    attr.set_output_scales(1 << 1, scales);
    dnnl::post_ops ops;
    if (residual) {
      ops.append_sum(m_scale / plan_->tensors[*residual].scale, 0, MdOf(*residual).data_type());
    }
    for (size_t k = 0; k < activation.size(); ++k) {
      const Eltwise& e = activation[k];
      const bool last = k + 1 == activation.size();
      ops.append_eltwise(!scale_first && last ? m_out : 1.f, e.algorithm, e.alpha, e.beta);
    }
    attr.set_post_ops(ops);
    return attr;
  }

  // Int8 plan tensor `src` convolved with `w` (s8, one scale per output
  // channel) + `bias` (f32, folded into the accumulator's scale), then
  // `activation`; the result in `dst_type` with multiplier `m_out` (f32: 1),
  // added to `residual` (sum post-op, in the residual's own type and scale).
  int EmitConvInt8(int src, const Weight& w, const Weight& bias, const ConvGeometry& geometry,
                   const Dims& out_dims, const std::vector<Eltwise>& activation,
                   memory::data_type dst_type, float m_out, std::optional<int> residual) {
    const float m_src = plan_->tensors[src].scale;
    const int64_t out_channels = w.dims[0], per_channel = w.numel() / out_channels;
    const std::vector<float> m_w = ChannelMultipliers(w);
    std::vector<float> b(out_channels, 0.f);
    for (int64_t o = 0; o < out_channels; ++o) {
      if (bias.numel() > 0) b[o] = bias.values[o] * m_src * m_w[o];
    }
    const dnnl::primitive_attr attr = Int8ConvAttr(m_src, m_w, m_out, activation, residual);
    Dims wdims = ToDims(w.dims);
    memory::format_tag tag = memory::format_tag::oihw;
    if (geometry.group > 1) {
      wdims = {geometry.group, wdims[0] / geometry.group, wdims[1], wdims[2], wdims[3]};
      tag = memory::format_tag::goihw;
    }
    const Md bias_md = PlainMd({out_channels});
    auto pd = dnnl::convolution_forward::primitive_desc(
        {dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
         Md(MdOf(src).dims(), MdOf(src).data_type(), memory::format_tag::any),
         Md(wdims, memory::data_type::s8, memory::format_tag::any), bias_md,
         Md(out_dims, dst_type, memory::format_tag::any), geometry.strides, geometry.dilates,
         geometry.pad_l, geometry.pad_r},
        attr, Engine());
    if (MdOf(src) != pd.src_desc()) src = Reorder(src, pd.src_desc());
    const memory packed = weights_.Get(
        &w, 1,
        [&, q = std::vector<int8_t>()]() mutable {
          q.resize(w.values.size());
          for (size_t i = 0; i < q.size(); ++i) {
            q[i] = static_cast<int8_t>(std::lround(w.values[i] * m_w[i / per_channel]));
          }
          return static_cast<const void*>(q.data());
        },
        Md(wdims, memory::data_type::s8, tag), pd.weights_desc());
    // The bias depends on the source's scale too: one per plan.
    memory bias_mem(bias_md, Engine());
    std::memcpy(bias_mem.get_data_handle(), b.data(), b.size() * sizeof(float));
    int dst;
    if (!residual) {
      dst = NewTensor(pd.dst_desc());
    } else {
      const Md want = WithType(pd.dst_desc(), MdOf(*residual).data_type());
      int r = *residual;
      if (!Overwritable(r) || MdOf(r) != want) r = Reorder(r, want);
      dst = View(r, pd.dst_desc());
    }
    plan_->tensors[dst].scale = m_out;
    AddStep(dnnl::convolution_forward(pd), pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}},
            {{DNNL_ARG_WEIGHTS, packed}, {DNNL_ARG_BIAS, bias_mem}});
    return dst;
  }

  // Applies eltwise ops to `src` into `dst` (same layout; may be `src`'s
  // storage), the first from src, the rest in place.
  int Activate(int src, int dst, const std::vector<Eltwise>& ops) {
    if (ops.empty() && src != dst) return CopyInto(src, dst);
    for (const Eltwise& e : ops) {
      auto pd = dnnl::eltwise_forward::primitive_desc(
          {dnnl::prop_kind::forward_inference, e.algorithm, MdOf(src), e.alpha, e.beta}, Attr({}),
          Engine());
      AddStep(dnnl::eltwise_forward(pd), pd.scratchpad_desc(),
              {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
      src = dst;
    }
    return dst;
  }

  // The destination of an op that keeps its first operand's layout: that
  // operand's storage when nothing reads it later.
  int SameLayoutDst(int src) {
    return Overwritable(src) ? View(src, MdOf(src)) : NewTensor(MdOf(src));
  }

  // Node `i` (not a fused Conv): fp32, except Conv in int8 mode.
  absl::Status Node(int i) {
    node_ = i;
    const GraphNode& n = g_.nodes[i];
    std::vector<Eltwise> activation = EltwiseOps(n.activation);
    int out = -1;
    switch (n.op) {
      case GraphOp::kConv:
        return Conv(i, i, nullptr);
      case GraphOp::kActivation: {
        const int src = InputF32(n.inputs[0]);
        out = Activate(src, SameLayoutDst(src), activation);
        activation.clear();
        break;
      }
      case GraphOp::kChannelAffine: {
        const int64_t channels = n.weights[0].numel();
        out = Binary(InputF32(n.inputs[0]), -1, &n.weights[0], {1, channels, 1, 1},
                     dnnl::algorithm::binary_mul, {});
        out = Binary(out, -1, &n.weights[1], {1, channels, 1, 1}, dnnl::algorithm::binary_add, {});
        break;
      }
      case GraphOp::kAdd:
      case GraphOp::kMul: {
        HAPI_ASSIGN_OR_RETURN(out, AddOrMul(n, activation));
        activation.clear();  // a post-op of the binary primitive
        break;
      }
      case GraphOp::kConcat:
        out = Concat(n);
        break;
      case GraphOp::kMaxPool:
      case GraphOp::kAveragePool:
      case GraphOp::kGlobalAveragePool: {
        HAPI_ASSIGN_OR_RETURN(out, Pool(n, InputF32(n.inputs[0])));
        break;
      }
      case GraphOp::kFlatten:
      case GraphOp::kReshape: {
        int src = InputF32(n.inputs[0]);
        const Md plain = PlainMd(MdOf(src).dims());
        if (MdOf(src) != plain) src = Reorder(src, plain);
        out = View(src, PlainMd(Batched(MdOf(src).dims()[0], g_.shapes.at(n.output))));
        break;
      }
      case GraphOp::kLinear: {
        HAPI_ASSIGN_OR_RETURN(out, Linear(n, InputF32(n.inputs[0]), activation));
        activation.clear();  // a post-op of the inner product
        break;
      }
    }
    out = Activate(out, out, activation);
    Bind(n.output, out);
    return absl::OkStatus();
  }

  // Add or Mul of two activations (one may broadcast) or of an activation
  // and a constant, with the node's activation as a post-op.
  absl::StatusOr<int> AddOrMul(const GraphNode& n, const std::vector<Eltwise>& activation) {
    const auto alg =
        n.op == GraphOp::kAdd ? dnnl::algorithm::binary_add : dnnl::algorithm::binary_mul;
    int a = InputF32(n.inputs[0]);
    if (n.inputs.size() == 2) {
      // Both commute: the operand broadcast (dims of 1) goes second.
      int b = InputF32(n.inputs[1]);
      if (!BroadcastsTo(MdOf(b).dims(), MdOf(a).dims())) std::swap(a, b);
      if (!BroadcastsTo(MdOf(b).dims(), MdOf(a).dims())) {
        return Unsupported("broadcasting both operands");
      }
      const Md want = MdOf(b).dims() == MdOf(a).dims() ? MdOf(a) : PlainMd(MdOf(b).dims());
      if (MdOf(b) != want) b = Reorder(b, want);
      return Binary(a, b, nullptr, {}, alg, activation);
    }
    const Dims dims = MdOf(a).dims();
    Dims cdims(dims.size(), 1);
    const auto& w = n.weights[0].dims;
    if (w.size() > dims.size()) return Unsupported("a constant of higher rank");
    std::copy(w.begin(), w.end(), cdims.end() - w.size());
    return Binary(a, -1, &n.weights[0], cdims, alg, activation);
  }

  int Concat(const GraphNode& n) {
    std::vector<Md> srcs;
    std::vector<std::pair<int, int>> args;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const int t = InputF32(n.inputs[k]);
      srcs.push_back(MdOf(t));
      args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), t});
    }
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto pd = dnnl::concat::primitive_desc(static_cast<int>(n.axis), srcs, Engine(), attr);
    const int out = NewTensor(pd.dst_desc());
    args.push_back({DNNL_ARG_DST, out});
    AddStep(dnnl::concat(pd), pd.scratchpad_desc(), std::move(args));
    return out;
  }

  // True when `from` broadcasts to `to` (same rank, each dim equal or 1).
  static bool BroadcastsTo(const Dims& from, const Dims& to) {
    if (from.size() != to.size()) return false;
    for (size_t d = 0; d < from.size(); ++d) {
      if (from[d] != to[d] && from[d] != 1) return false;
    }
    return true;
  }

  static absl::Status Unsupported(absl::string_view what) {
    return absl::UnimplementedError(absl::StrCat("the direct path does not lower ", what));
  }

  // Copies `src` into `dst` (same layout).
  int CopyInto(int src, int dst) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto pd = dnnl::reorder::primitive_desc(Engine(), MdOf(src), Engine(), MdOf(dst), attr);
    AddStep(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
    return dst;
  }

  // a (op) b, or a (op) the constant `w` broadcast as `cdims`.
  int Binary(int a, int b, const Weight* w, const Dims& cdims, dnnl::algorithm alg,
             const std::vector<Eltwise>& activation) {
    std::vector<std::pair<int, memory>> constants;
    Md b_md;
    if (w != nullptr) {
      b_md = PlainMd(cdims);
      constants.push_back({DNNL_ARG_SRC_1, weights_.Get(*w, b_md, b_md)});
    } else {
      b_md = MdOf(b);
    }
    auto pd =
        dnnl::binary::primitive_desc({alg, MdOf(a), b_md, MdOf(a)}, Attr(activation), Engine());
    const int out = SameLayoutDst(a);
    std::vector<std::pair<int, int>> tensors = {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_DST, out}};
    if (w == nullptr) tensors.push_back({DNNL_ARG_SRC_1, b});
    AddStep(dnnl::binary(pd), pd.scratchpad_desc(), std::move(tensors), std::move(constants));
    return out;
  }

  absl::StatusOr<int> Pool(const GraphNode& n, int src) {
    const Dims in = MdOf(src).dims();
    const Dims out_dims = Batched(in[0], g_.shapes.at(n.output));
    Dims kernel = {in[2], in[3]}, strides = {1, 1}, dilation = {0, 0}, pad_l = {0, 0},
         pad_r = {0, 0};
    dnnl::algorithm alg = dnnl::algorithm::pooling_avg_exclude_padding;
    if (n.op != GraphOp::kGlobalAveragePool) {
      kernel = {n.kernel[0], n.kernel[1]};
      strides = {n.strides[0], n.strides[1]};
      pad_l = {n.pads[0], n.pads[1]};
      pad_r = {n.pads[2], n.pads[3]};
      if (n.op == GraphOp::kMaxPool) {
        alg = dnnl::algorithm::pooling_max;
        dilation = {n.dilations[0] - 1, n.dilations[1] - 1};
      } else if (n.count_include_pad) {
        if (n.ceil_mode) return Unsupported("AveragePool with ceil_mode and count_include_pad");
        alg = dnnl::algorithm::pooling_avg_include_padding;
      }
      for (int d = 0; d < 2; ++d) {  // ceil mode: the last window may pass the padding
        const int64_t extent = (kernel[d] - 1) * (dilation[d] + 1) + 1;
        pad_r[d] =
            std::max(pad_r[d], (out_dims[2 + d] - 1) * strides[d] + extent - in[2 + d] - pad_l[d]);
      }
    }
    auto pd = dnnl::pooling_v2_forward::primitive_desc(
        {dnnl::prop_kind::forward_inference, alg, MdOf(src), AnyMd(out_dims), strides, kernel,
         dilation, pad_l, pad_r},
        Attr({}), Engine());
    const int out = NewTensor(pd.dst_desc());
    AddStep(dnnl::pooling_v2_forward(pd), pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}});
    return out;
  }

  absl::StatusOr<int> Linear(const GraphNode& n, int src, const std::vector<Eltwise>& activation) {
    const Dims in = MdOf(src).dims();
    if (in.size() != 2) return Unsupported("a Gemm/MatMul on a tensor of rank other than 2");
    const Weight& w = n.weights[0];
    const Dims out_dims = {in[0], w.dims[0]};
    const Md bias_md = n.weights.size() > 1 ? PlainMd({w.dims[0]}) : Md();
    auto pd = dnnl::inner_product_forward::primitive_desc(
        {dnnl::prop_kind::forward_inference, MdOf(src), AnyMd(ToDims(w.dims)), bias_md,
         PlainMd(out_dims)},
        Attr(activation), Engine());
    if (MdOf(src) != pd.src_desc()) src = Reorder(src, pd.src_desc());
    std::vector<std::pair<int, memory>> constants = {
        {DNNL_ARG_WEIGHTS, weights_.Get(w, PlainMd(ToDims(w.dims)), pd.weights_desc())}};
    if (n.weights.size() > 1) {
      constants.push_back({DNNL_ARG_BIAS, weights_.Get(n.weights[1], bias_md, bias_md)});
    }
    const int out = NewTensor(pd.dst_desc());
    AddStep(dnnl::inner_product_forward(pd), pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, std::move(constants));
    return out;
  }

  const ImportedGraph& g_;
  WeightCache& weights_;
  const std::map<std::string, float>* int8_max_;  // null: fp32
  bool observe_;
  std::map<std::string, int> producer_;  // graph tensor -> node
  std::unique_ptr<Plan> plan_;
  bool writable_ = false;
  int node_ = -1;                        // the node being compiled
  std::map<std::string, int> tensor_;    // graph tensor -> plan tensor
  std::map<std::string, int> last_use_;  // graph tensor -> last node reading it
};

// Adaptive average pooling (PyTorch's bins) of N x H x W x C (channels
// innermost) `x`, dims N, C, H, W, to pool x pool, per sample (i, j, c): the
// innermost loop runs over channels, so it vectorises.
void AdaptivePoolNhwc(const float* x, const Dims& d, int pool, std::vector<float>* out) {
  const int64_t n = d[0], c = d[1], h = d[2], w = d[3];
  out->assign(static_cast<size_t>(n * pool * pool * c), 0.f);
  float* o = out->data();
  for (int64_t s = 0; s < n; ++s) {
    const float* sample = x + s * h * w * c;
    for (int i = 0; i < pool; ++i) {
      const int64_t h0 = i * h / pool, h1 = ((i + 1) * h + pool - 1) / pool;
      for (int j = 0; j < pool; ++j, o += c) {
        const int64_t w0 = j * w / pool, w1 = ((j + 1) * w + pool - 1) / pool;
        for (int64_t y = h0; y < h1; ++y) {
          for (int64_t x2 = w0; x2 < w1; ++x2) {
            const float* v = sample + (y * w + x2) * c;
            for (int64_t k = 0; k < c; ++k) o[k] += v[k];
          }
        }
        const float inv = 1.f / static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t k = 0; k < c; ++k) o[k] *= inv;
      }
    }
  }
}

// A head's linear layer (classes x (c, i, j) features, as stored) reordered
// for AdaptivePoolNhwc's (i, j, c) features and transposed, so that the
// innermost loop runs over classes.
std::vector<float> NhwcTransposedFc(const ExitHeadWeights& h) {
  const int64_t classes = h.fc_weight.dims[0], width = h.fc_weight.dims[1];
  const int64_t bins = int64_t{h.pool} * h.pool, channels = width / bins;
  std::vector<float> t(static_cast<size_t>(width * classes));
  for (int64_t k = 0; k < classes; ++k) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t b = 0; b < bins; ++b) {
        t[(b * channels + c) * classes + k] = h.fc_weight.values[k * width + c * bins + b];
      }
    }
  }
  return t;
}

}  // namespace

// --- The program -------------------------------------------------------------

struct DirectProgram::Impl {
  ImportedGraph graph;
  std::vector<GraphSegment> segments;
  std::vector<float> mean, std;
  struct Head {
    int stage = 0;
    ExitHeadWeights weights;
    std::vector<float> fc_t;  // NhwcTransposedFc(weights)
  };
  std::map<int, Head> heads;  // by exit; constant once shared
  // int8 (convolutions): each graph tensor's calibrated max |value|.
  bool int8 = false;
  std::map<std::string, float> int8_max;

  mutable absl::Mutex mu;
  mutable WeightCache weights ABSL_GUARDED_BY(mu);
  // Plans by segment (resp. head) and input layout; never removed.
  mutable std::vector<std::vector<std::unique_ptr<Plan>>> segment_plans ABSL_GUARDED_BY(mu);
  mutable std::map<int, std::vector<std::unique_ptr<Plan>>> head_plans ABSL_GUARDED_BY(mu);

  // The plan of segment `s` (head `exit` when s < 0) for input `md`.
  absl::StatusOr<const Plan*> GetPlan(int s, int exit, const Md& md) const {
    {
      absl::ReaderMutexLock lock(&mu);
      const std::vector<std::unique_ptr<Plan>>* plans = nullptr;
      if (s >= 0) {
        plans = &segment_plans[s];
      } else if (auto it = head_plans.find(exit); it != head_plans.end()) {
        plans = &it->second;
      }
      for (size_t i = 0; plans != nullptr && i < plans->size(); ++i) {
        if ((*plans)[i]->input == md) return (*plans)[i].get();
      }
    }
    absl::MutexLock lock(&mu);
    auto& plans = s >= 0 ? segment_plans[s] : head_plans[exit];
    for (const auto& p : plans) {
      if (p->input == md) return p.get();
    }
    Compiler compiler(graph, weights, int8 ? &int8_max : nullptr);
    absl::StatusOr<std::unique_ptr<Plan>> plan;
    try {
      const bool tail = s + 1 == static_cast<int>(segments.size());
      plan = s >= 0
                 ? compiler.Segment(segments[s], md, /*writable=*/!tail, /*plain_output=*/tail)
                 : compiler.Head(heads.at(exit).weights, md, segments[heads.at(exit).stage].output);
    } catch (const dnnl::error& e) {
      const std::string what = s >= 0 ? absl::StrCat("segment ", s) : absl::StrCat("exit ", exit);
      return absl::UnimplementedError(absl::StrCat("oneDNN cannot run ", what, ": ", e.what()));
    }
    if (!plan.ok()) return plan.status();
    plans.push_back(*std::move(plan));
    return plans.back().get();
  }

  // Runs segment `s` on `x`, in place when `in_place`, else into `out`.
  absl::Status Run(int s, DirectActivations& x) const {
    HAPI_ASSIGN_OR_RETURN(const Plan* plan, GetPlan(s, -1, x.md));
    const Md out = plan->output_md();
    if (plan->output_in_input()) {
      plan->Run(x.cur.data(), x.cur.data());
    } else {
      x.spare.Reserve(plan->output_bytes());
      plan->Run(x.cur.data(), x.spare.data());
      x.cur.Swap(x.spare);
    }
    x.md = out;
    return absl::OkStatus();
  }
};

DirectProgram::DirectProgram(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DirectProgram::~DirectProgram() = default;

int DirectProgram::num_stages() const { return static_cast<int>(impl_->segments.size()) - 1; }

absl::StatusOr<std::unique_ptr<DirectProgram>> DirectProgram::Create(
    const ImportedGraph& graph, const std::vector<GraphSegment>& segments, std::vector<float> mean,
    std::vector<float> std) {
  auto impl = std::make_unique<Impl>();
  impl->graph = graph;
  impl->segments = segments;
  impl->mean = std::move(mean);
  impl->std = std::move(std);
  {
    absl::MutexLock lock(&impl->mu);
    impl->segment_plans.resize(segments.size());
  }
  std::unique_ptr<DirectProgram> program(new DirectProgram(std::move(impl)));
  HAPI_RETURN_IF_ERROR(program->Check());
  return program;
}

absl::Status DirectProgram::Check() const {
  // Every segment and head for one sample: reports what cannot be lowered.
  const auto& shape = impl_->graph.input_shape;
  std::vector<float> zeros(static_cast<size_t>(shape[0] * shape[1] * shape[2]));
  std::unique_ptr<Activations> x = Input(zeros.data(), 1);
  std::vector<float> logits;
  for (int s = 0; s < num_stages(); ++s) {
    HAPI_RETURN_IF_ERROR(RunStage(s, *x));
    for (const auto& [exit, head] : impl_->heads) {
      if (head.stage == s) HAPI_RETURN_IF_ERROR(HeadLogits(exit, *x, &logits));
    }
  }
  return FinalLogits(*x, &logits);
}

absl::Status DirectProgram::Calibrate(const float* pixels, int n,
                                      std::map<std::string, float>* max) const {
  constexpr int kBatch = 32;
  const auto& shape = impl_->graph.input_shape;
  const int64_t sample = shape[0] * shape[1] * shape[2];
  for (int begin = 0; begin < n; begin += kBatch) {
    std::unique_ptr<Activations> x = Input(pixels + begin * sample, std::min(kBatch, n - begin));
    auto& a = static_cast<DirectActivations&>(*x);
    for (int s = 0; s < num_stages(); ++s) {
      absl::StatusOr<std::unique_ptr<Plan>> plan;
      try {
        absl::MutexLock lock(&impl_->mu);
        Compiler compiler(impl_->graph, impl_->weights, nullptr, /*observe=*/true);
        plan = compiler.Segment(impl_->segments[s], a.md, /*writable=*/true, false);
      } catch (const dnnl::error& e) {
        return absl::InternalError(absl::StrCat("calibrating stage ", s, ": ", e.what()));
      }
      if (!plan.ok()) return plan.status();
      a.spare.Reserve((*plan)->output_bytes());
      (*plan)->Run(a.cur.data(), a.spare.data(), [&](const std::vector<memory>& tensors) {
        for (const auto& [name, t] : (*plan)->named) {
          const float* v = static_cast<const float*>(tensors[t].get_data_handle());
          const size_t count = (*plan)->tensors[t].md.get_size() / sizeof(float);
          float& m = (*max)[name];
          for (size_t i = 0; i < count; ++i) m = std::max(m, std::abs(v[i]));
        }
      });
      a.cur.Swap(a.spare);
      a.md = (*plan)->output_md();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, float>> DirectProgram::Ranges(const float* pixels,
                                                                   int n) const {
  if (impl_->int8) return absl::FailedPreconditionError("the program is int8 already");
  if (n < 1) return absl::InvalidArgumentError("int8 calibration needs samples");
  std::map<std::string, float> max;
  HAPI_RETURN_IF_ERROR(Calibrate(pixels, n, &max));
  return max;
}

absl::StatusOr<std::unique_ptr<DirectProgram>> DirectProgram::Int8(const float* pixels,
                                                                   int n) const {
  absl::StatusOr<std::map<std::string, float>> ranges = Ranges(pixels, n);
  if (!ranges.ok()) return ranges.status();
  return Int8(*std::move(ranges));
}

absl::StatusOr<std::unique_ptr<DirectProgram>> DirectProgram::Int8(
    std::map<std::string, float> ranges) const {
  if (impl_->int8) return absl::FailedPreconditionError("the program is int8 already");
  for (const auto& [tensor, max] : ranges) {
    if (!(max >= 0 && std::isfinite(max))) {
      return absl::InvalidArgumentError(
          absl::StrCat("int8 range of tensor '", tensor, "' is not a finite |value|"));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->graph = impl_->graph;
  impl->segments = impl_->segments;
  impl->mean = impl_->mean;
  impl->std = impl_->std;
  impl->heads = impl_->heads;
  impl->int8 = true;
  impl->int8_max = std::move(ranges);
  {
    absl::MutexLock lock(&impl->mu);
    impl->segment_plans.resize(impl->segments.size());
  }
  std::unique_ptr<DirectProgram> program(new DirectProgram(std::move(impl)));
  absl::Status checked = program->Check();
  if (absl::IsUnimplemented(checked) && absl::StrContains(checked.message(), "no int8 range")) {
    return absl::InvalidArgumentError(checked.message());
  }
  HAPI_RETURN_IF_ERROR(checked);
  return program;
}

absl::Status DirectProgram::AttachHead(int exit, int stage, const ExitHeadWeights& head) {
  if (stage < 0 || stage >= num_stages() || exit < 0 || exit >= 1000) {
    return absl::InvalidArgumentError(absl::StrCat("no stage ", stage, " or exit ", exit));
  }
  const auto& shape = impl_->graph.shapes.at(impl_->segments[stage].output);
  const int64_t channels = head.conv_weight.numel() > 0 ? head.conv_weight.dims[0] : shape[0];
  if (shape.size() != 3 || (head.conv_weight.numel() > 0 && head.conv_weight.dims[1] != shape[0]) ||
      head.fc_weight.dims.size() != 2 ||
      head.fc_weight.dims[1] != channels * head.pool * head.pool ||
      head.fc_bias.numel() != head.fc_weight.dims[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat("the head of exit ", exit, " does not fit the output of stage ", stage));
  }
  impl_->heads[exit] = {stage, head, NhwcTransposedFc(head)};
  return absl::OkStatus();
}

std::unique_ptr<Activations> DirectProgram::Input(const float* pixels, int n) const {
  const auto& shape = impl_->graph.input_shape;
  auto x = std::make_unique<DirectActivations>();
  x->md = PlainMd(Batched(n, shape));
  x->cur.Reserve(std::max<size_t>(x->md.get_size(), 64));
  float* out = reinterpret_cast<float*>(x->cur.data());
  const int64_t plane = shape[1] * shape[2];
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t c = 0; c < shape[0]; ++c) {
      const float mean = impl_->mean[c], inv = 1.f / impl_->std[c];
      const int64_t base = (s * shape[0] + c) * plane;
      for (int64_t i = 0; i < plane; ++i) out[base + i] = (pixels[base + i] - mean) * inv;
    }
  }
  return x;
}

absl::Status DirectProgram::RunStage(int stage, Activations& x) const {
  if (stage < 0 || stage >= num_stages()) {
    return absl::InvalidArgumentError(absl::StrCat("no stage ", stage));
  }
  try {
    return impl_->Run(stage, static_cast<DirectActivations&>(x));
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("running stage ", stage, ": ", e.what()));
  }
}

absl::Status DirectProgram::FinalLogits(const Activations& x, std::vector<float>* logits) const {
  const auto& a = static_cast<const DirectActivations&>(x);
  try {
    HAPI_ASSIGN_OR_RETURN(const Plan* plan, impl_->GetPlan(num_stages(), -1, a.md));
    logits->resize(plan->output_md().get_size() / sizeof(float));
    plan->Run(a.cur.data(), logits->data());
    return absl::OkStatus();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("running the classifier: ", e.what()));
  }
}

absl::Status DirectProgram::HeadLogits(int exit, const Activations& x,
                                       std::vector<float>* logits) const {
  auto head = impl_->heads.find(exit);
  if (head == impl_->heads.end()) {
    return absl::FailedPreconditionError(absl::StrCat("exit ", exit, " has no head attached"));
  }
  const auto& a = static_cast<const DirectActivations&>(x);
  thread_local std::vector<float> features, pooled;
  try {
    HAPI_ASSIGN_OR_RETURN(const Plan* plan, impl_->GetPlan(-1, exit, a.md));
    features.resize(plan->output_md().get_size() / sizeof(float));
    plan->Run(a.cur.data(), features.data());
    const ExitHeadWeights& h = head->second.weights;
    AdaptivePoolNhwc(features.data(), plan->output_md().dims(), h.pool, &pooled);
    const int64_t n = a.md.data.dims[0], classes = h.fc_weight.dims[0], width = h.fc_weight.dims[1];
    logits->resize(static_cast<size_t>(n * classes));
    const float* fc_t = head->second.fc_t.data();
    for (int64_t s = 0; s < n; ++s) {
      float* out = logits->data() + s * classes;
      std::copy(h.fc_bias.values.begin(), h.fc_bias.values.end(), out);
      const float* in = pooled.data() + s * width;
      for (int64_t j = 0; j < width; ++j) {
        const float* w = fc_t + j * classes;
        for (int64_t k = 0; k < classes; ++k) out[k] += w[k] * in[j];
      }
    }
    return absl::OkStatus();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("running exit ", exit, ": ", e.what()));
  }
}

absl::Status DirectProgram::CopyOut(const Activations& x, std::vector<float>* values,
                                    std::vector<int64_t>* dims) const {
  const auto& a = static_cast<const DirectActivations&>(x);
  const Md plain = PlainMd(a.md.dims());
  *dims = a.md.dims();
  values->resize(plain.get_size() / sizeof(float));
  try {
    RunReorder(a.md, a.cur.data(), plain, values->data());
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("copying activations out: ", e.what()));
  }
  return absl::OkStatus();
}

void SoftmaxRows(std::vector<float>* values, int width) {
  for (size_t row = 0; row + width <= values->size(); row += width) {
    float* v = values->data() + row;
    const float max = *std::max_element(v, v + width);
    float sum = 0;
    for (int k = 0; k < width; ++k) sum += (v[k] = std::exp(v[k] - max));
    for (int k = 0; k < width; ++k) v[k] /= sum;
  }
}

void SetDirectThreads(int threads) { g_threads.store(threads, std::memory_order_relaxed); }

}  // namespace hapi
