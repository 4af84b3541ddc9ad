// A load generator for hapi-server, over hapi.v1.Inference or the Open
// Inference Protocol (inference.GRPCInferenceService): closed loop (N clients,
// each with one request in flight) or open loop (a fixed arrival rate,
// independent of how fast answers come back), for a duration or a request
// count. A request carries `batch` images: one ModelInfer of N samples with
// OIP, N concurrent Classify calls with hapi.v1 (which has no batched call),
// answered when all N are.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"

namespace hapi {

enum class Protocol { kHapi, kOip };

// How far a run has got, as LoadOptions::observe sees it.
struct LoadProgress {
  int64_t sent = 0;    // requests sent
  int64_t done = 0;    // of which answered
  double seconds = 0;  // since the run began
};

struct LoadOptions {
  int concurrency = 8;     // closed loop
  double rate = 0;         // > 0: open loop, requests per second
  double duration_s = 10;  // stop after this long ...
  int64_t count = 0;       // ... or after this many requests (> 0)
  bool progress = true;    // live line on stderr
  int batch = 1;           // images per request
  // >= 0: requests are numbered in the order they are sent, and those from
  // this number on take their images from the second half of the image list
  // (RunLoad's `num_images` counts one half): a clean set, then its shifted
  // copy. < 0: the list is one set.
  int64_t shift_after = -1;
  // > 0: `observe` runs each time another `observe_every` requests have been
  // sent, and once at the end when requests were sent after the last time.
  // It runs on a thread of its own, one call at a time, so a slow call delays
  // the next call (which then reports the latest count), never the load.
  int64_t observe_every = 0;
  std::function<void(const LoadProgress&)> observe;
};

// One image's answer. The images of one request share its times.
struct LoadSample {
  double start_s = 0;    // since the run began
  double latency_s = 0;  // client-side, of the whole request
  double server_s = 0;   // server-side, as a hapi.v1 response reports it (OIP: 0)
  double queue_s = 0;    // of which waiting for a batch
  int code = 0;
  int label = -1, truth = -1, exit_index = -1;
  bool cut_by_deadline = false;
  bool shifted = false;  // a shifted image (LoadOptions::shift_after)
};

struct LoadReport {
  double seconds = 0;
  int batch = 1;
  std::vector<LoadSample> samples;  // one per image, `batch` per request
  int64_t requests() const { return static_cast<int64_t>(samples.size()) / batch; }
  double throughput() const { return seconds > 0 ? requests() / seconds : 0; }  // requests/s
  double images_per_s() const { return seconds > 0 ? samples.size() / seconds : 0; }
};

// One protocol's way of sending a request of images and reading the answers.
class LoadClient {
 public:
  struct Answer {
    int label = -1, exit_index = -1;
    bool cut_by_deadline = false;
    double server_s = 0, queue_s = 0;
  };
  using Done = std::function<void(const grpc::Status&, const std::vector<Answer>&)>;
  virtual ~LoadClient() = default;
  // The images with these indices (into the run's image list) as one
  // request; `done` once, with an answer per image when the status is OK.
  // Blocking (closed loop) ...
  virtual grpc::Status Call(const std::vector<int64_t>& images, std::vector<Answer>* answers) = 0;
  // ... or not (open loop; `done` runs on a gRPC thread).
  virtual void Send(const std::vector<int64_t>& images, Done done) = 0;
};

// Who to call and how: the channel, the deadline and token of every call;
// `model` names the model (ClassifyRequest.model, empty: the only one served;
// the OIP model_name). MakeLoadClient's `images` are raw uint8 CHW
// tensors of channels x height x width (sent with that shape: Image.channels,
// height and width, or the OIP tensor [N, C, H, W]), or with `encoded` PNG or
// JPEG files (Image.encoded, or an OIP BYTES tensor [N]).
struct LoadTarget {
  Protocol protocol = Protocol::kHapi;
  std::shared_ptr<grpc::Channel> channel;
  std::string token;
  double deadline_ms = 0;  // per-call gRPC deadline (0: none)
  std::string model;       // ClassifyRequest.model or OIP model_name
  int channels = 1, height = 28, width = 28;
  bool encoded = false;
};
std::unique_ptr<LoadClient> MakeLoadClient(const LoadTarget& target,
                                           const std::vector<std::string>& images);

// `images` (with their labels, -1 if unknown) are what `client` was made
// with; requests cycle through the first `num_images` of them (with
// LoadOptions::shift_after, also through the next `num_images`, their
// shifted copies, whose labels are the same: `labels` may hold one half).
LoadReport RunLoad(LoadClient* client, int num_images, const std::vector<int>& labels,
                   const LoadOptions& options);

// A human summary: throughput, latency percentiles, errors by code, exit
// histogram, accuracy (with shifted images also before and after the shift;
// the JSON then has "shift": the same).
std::string SummariseLoad(const LoadReport& report);
std::string LoadReportJson(const LoadReport& report);
std::string LoadReportCsv(const LoadReport& report);

}  // namespace hapi
