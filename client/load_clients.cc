// The load generator's two protocols: hapi.v1.Inference and the Open
// Inference Protocol, each sending the same images (raw uint8 tensors of the
// target's shape, or encoded files).
#include <atomic>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/load_generator.h"

namespace hapi {
namespace {

void Prepare(const LoadTarget& t, grpc::ClientContext* ctx) {
  if (t.deadline_ms > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(t.deadline_ms * 1000)));
  }
  if (!t.token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", t.token));
}

// Blocks until Send answers.
grpc::Status CallBySending(LoadClient* client, const std::vector<int64_t>& images,
                           std::vector<LoadClient::Answer>* answers) {
  absl::Notification done;
  grpc::Status status;
  client->Send(images, [&](const grpc::Status& s, const std::vector<LoadClient::Answer>& a) {
    status = s;
    *answers = a;
    done.Notify();
  });
  done.WaitForNotification();
  return status;
}

// Image `bytes` as the target sends them.
void SetImage(const LoadTarget& t, const std::string& bytes, v1::Image* image) {
  if (t.encoded) {
    image->set_encoded(bytes);
    return;
  }
  image->set_raw_uint8(bytes);
  image->set_channels(t.channels);
  image->set_height(t.height);
  image->set_width(t.width);
}

LoadClient::Answer FromClassify(const v1::ClassifyResponse& r) {
  LoadClient::Answer a;
  a.label = r.label();
  a.exit_index = r.exit().exit_index();
  a.cut_by_deadline = r.cut_by_deadline();
  a.server_s = r.server_latency_s();
  a.queue_s = r.queue_s();
  return a;
}

// hapi.v1 has no batched call: a request of N images is N concurrent
// Classify calls, answered when the last one is.
class HapiLoadClient : public LoadClient {
 public:
  HapiLoadClient(const LoadTarget& target, const std::vector<std::string>& images)
      : target_(target), images_(images), stub_(v1::Inference::NewStub(target.channel)) {}

  grpc::Status Call(const std::vector<int64_t>& images, std::vector<Answer>* answers) override {
    if (images.size() != 1) return CallBySending(this, images, answers);
    grpc::ClientContext ctx;
    Prepare(target_, &ctx);
    v1::ClassifyRequest request;
    request.set_model(target_.model);
    SetImage(target_, images_[images[0]], request.mutable_image());
    v1::ClassifyResponse response;
    grpc::Status status = stub_->Classify(&ctx, request, &response);
    answers->assign(1, FromClassify(response));
    return status;
  }

  void Send(const std::vector<int64_t>& images, Done done) override {
    struct One {
      grpc::ClientContext ctx;
      v1::ClassifyRequest request;
      v1::ClassifyResponse response;
    };
    struct Batch {
      std::vector<One> calls;
      std::atomic<int> left;
      absl::Mutex mu;
      grpc::Status status ABSL_GUARDED_BY(mu);
      Done done;
    };
    auto* batch = new Batch{std::vector<One>(images.size()), {}, {}, {}, std::move(done)};
    batch->left = static_cast<int>(images.size());
    for (size_t k = 0; k < images.size(); ++k) {
      One& one = batch->calls[k];
      Prepare(target_, &one.ctx);
      one.request.set_model(target_.model);
      SetImage(target_, images_[images[k]], one.request.mutable_image());
    }
    for (One& one : batch->calls) {
      stub_->async()->Classify(&one.ctx, &one.request, &one.response,
                               [batch](grpc::Status s) { Finished(batch, s); });
    }
  }

 private:
  template <typename Batch>
  static void Finished(Batch* batch, const grpc::Status& s) {
    if (!s.ok()) {
      absl::MutexLock lock(&batch->mu);
      if (batch->status.ok()) batch->status = s;
    }
    if (--batch->left > 0) return;
    std::vector<Answer> answers;
    for (const auto& one : batch->calls) answers.push_back(FromClassify(one.response));
    grpc::Status status;
    {
      absl::MutexLock lock(&batch->mu);
      status = batch->status;
    }
    batch->done(status, answers);
    delete batch;
  }

  const LoadTarget target_;
  const std::vector<std::string>& images_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

// Answers from a ModelInfer response, as a stock client reads them: label
// and exit from raw_output_contents. INTERNAL (client-side) when the
// response does not hold them for every image. OIP responses carry no
// server-side latency, and count the samples cut short by the deadline
// without naming them, so those stay unset.
grpc::Status OipAnswers(const inference::ModelInferResponse& r, size_t n,
                        std::vector<LoadClient::Answer>* answers) {
  answers->assign(n, LoadClient::Answer());
  int found = 0;
  for (int k = 0; k < r.outputs_size() && k < r.raw_output_contents_size(); ++k) {
    const std::string& name = r.outputs(k).name();
    const std::string& raw = r.raw_output_contents(k);
    const bool label = name == "label" && raw.size() == n * sizeof(int64_t);
    const bool exit = name == "exit" && raw.size() == n * sizeof(int32_t);
    for (size_t i = 0; i < n && (label || exit); ++i) {
      if (label) {
        int64_t v;
        std::memcpy(&v, raw.data() + i * sizeof(v), sizeof(v));
        (*answers)[i].label = static_cast<int>(v);
      } else {
        int32_t v;
        std::memcpy(&v, raw.data() + i * sizeof(v), sizeof(v));
        (*answers)[i].exit_index = v;
      }
    }
    found += label || exit;
  }
  if (found == 2) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INTERNAL, "response lacks the label or exit output");
}

// The Open Inference Protocol: a request of N images is one ModelInfer of a
// UINT8 tensor [N, C, H, W], or of a BYTES tensor [N] of encoded images (each
// a 4-byte little-endian length and its bytes), in raw_input_contents.
class OipLoadClient : public LoadClient {
 public:
  OipLoadClient(const LoadTarget& target, const std::vector<std::string>& images)
      : target_(target),
        images_(images),
        stub_(inference::GRPCInferenceService::NewStub(target.channel)) {}

  grpc::Status Call(const std::vector<int64_t>& images, std::vector<Answer>* answers) override {
    grpc::ClientContext ctx;
    Prepare(target_, &ctx);
    inference::ModelInferResponse response;
    grpc::Status status = stub_->ModelInfer(&ctx, Request(images), &response);
    if (!status.ok()) return status;
    return OipAnswers(response, images.size(), answers);
  }

  void Send(const std::vector<int64_t>& images, Done done) override {
    struct Pending {
      grpc::ClientContext ctx;
      inference::ModelInferRequest request;
      inference::ModelInferResponse response;
      size_t n = 0;
      Done done;
    };
    auto* p = new Pending();
    Prepare(target_, &p->ctx);
    p->request = Request(images);
    p->n = images.size();
    p->done = std::move(done);
    stub_->async()->ModelInfer(&p->ctx, &p->request, &p->response, [p](grpc::Status s) {
      std::vector<Answer> answers;
      if (s.ok()) s = OipAnswers(p->response, p->n, &answers);
      p->done(s, answers);
      delete p;
    });
  }

 private:
  inference::ModelInferRequest Request(const std::vector<int64_t>& images) const {
    inference::ModelInferRequest r;
    r.set_model_name(target_.model);
    auto* input = r.add_inputs();
    input->set_name("image");
    std::string* raw = r.add_raw_input_contents();
    if (target_.encoded) {
      input->set_datatype("BYTES");
      input->add_shape(static_cast<int64_t>(images.size()));
      for (int64_t i : images) {
        const uint32_t size = static_cast<uint32_t>(images_[i].size());
        raw->append(reinterpret_cast<const char*>(&size), sizeof(size));  // little-endian host
        *raw += images_[i];
      }
      return r;
    }
    input->set_datatype("UINT8");
    for (int64_t d : {static_cast<int64_t>(images.size()), int64_t{target_.channels},
                      int64_t{target_.height}, int64_t{target_.width}}) {
      input->add_shape(d);
    }
    for (int64_t i : images) *raw += images_[i];
    return r;
  }

  const LoadTarget target_;
  const std::vector<std::string>& images_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

}  // namespace

std::unique_ptr<LoadClient> MakeLoadClient(const LoadTarget& target,
                                           const std::vector<std::string>& images) {
  if (target.protocol == Protocol::kOip) return std::make_unique<OipLoadClient>(target, images);
  return std::make_unique<HapiLoadClient>(target, images);
}

}  // namespace hapi
