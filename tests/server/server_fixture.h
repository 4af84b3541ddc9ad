// Shared set-up for the inference-server tests: a model in a temporary
// repository (models/tiny, three device profiles, four variants), test
// images, the executor's reference answers, and the real server
// (InferenceServer) in-process on 127.0.0.1. Which model: a test binary links
// one of fake_fixture_model.cc (the fake model; no LibTorch) or
// trained_fixture_model.cc (a tiny trained network, for the hapi-server
// binary). Torch-free headers only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/design.h"
#include "core/executor.h"
#include "core/fashion_mnist.h"
#include "core/model.h"
#include "grpcpp/grpcpp.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "hapi/v1/optimizer.pb.h"
#include "prometheus/registry.h"
#include "server/batcher.h"
#include "server/inference_server.h"
#include "server/inference_service.h"
#include "server/live_monitor.h"
#include "server/servable.h"

namespace hapi {
namespace testing {

// Variants written into the repository:
//   v1     device dev:     exits {0, 2}, median thresholds (a good mix of exits)
//   v2     device dev:     exits {1, 3}, median thresholds
//   deep   device slow:    exits {0, 2}, thresholds 1.0 (almost everything goes
//                          to the final exit); the slow profile predicts exit 0
//                          in ~10 ms and each later stage in 5 s
//   stuck  device glacial: exits {0}; stage 0 is predicted to take 100 s
inline constexpr char kModelName[] = "tiny";

struct ServerFixture {
  std::string repository;
  ModelLoader load_model;              // the implementation this binary links
  std::shared_ptr<const Model> model;  // loaded from the repository
  int num_images = 0;
  std::vector<uint8_t> images;  // num_images x 28 x 28, Fashion-MNIST test split
  std::vector<int> true_labels;

  const uint8_t* image(int i) const {
    return images.data() + static_cast<size_t>(i) * kImagePixels;
  }
  std::vector<float> Pixels(int i) const;
  // The manifest written at repository/variants/<id>/variant.pbtxt.
  v1::VariantManifest Variant(const std::string& id) const;
  // Where the server finds variants and how it loads their model.
  ServableOptions Servables() const;
};

// Defined by the fixture model the binary links: writes the model into
// `model_dir`, sets `load_model`, and picks the test images.
void MakeFixtureModel(const std::string& model_dir, ServerFixture* fixture);

// Built once per process (training is cached on disk between the processes
// ctest starts, keyed by this binary's identity).
const ServerFixture& Fixture();

Design DesignOf(const v1::VariantManifest& variant);

// Writes the model's calibration tables (both splits: the fixture's images
// through every exit, with their true labels) and names them in its
// manifest: what the live monitor's drift reference and the optimizer read.
void WriteCalibrationTables();

// A shift of the input distribution both fixture models notice: flat images
// whose mean pixel sits just above a tenth of the range (for the fake model,
// just above one of its class-bin edges, where it is unsure at every exit).
std::vector<uint8_t> ShiftedImage(int i);

// EarlyExitExecutor::Run at batch 1 for image `i` under `variant`, with the
// server's default executor options. Results are memoised per variant.
const SampleResult& Expected(const std::string& variant, int i);

v1::ClassifyRequest RawRequest(const uint8_t* image, const std::string& request_id = "");
std::string EncodePng(const uint8_t* pixels, int width, int height, int channels);

struct TestServerOptions {
  std::string variant = "v1";  // empty: nothing loaded
  BatcherOptions batcher;
  LiveMonitorOptions monitor;  // fraction 0: off
  InferenceServiceOptions service;
  int max_receive_bytes = 0;  // 0: gRPC's default
  ModelLoader load_model;     // empty: the fixture's
};

// The real server in-process, listening on 127.0.0.1:<ephemeral>.
class TestServer {
 public:
  explicit TestServer(TestServerOptions options = {});
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  v1::Inference::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> NewChannel() const;
  ServableManager& servables() { return server_->servables(); }
  prometheus::Registry& registry() { return server_->registry(); }
  int port() const { return server_->port(); }

 private:
  std::unique_ptr<InferenceServer> server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

// Unary Classify with a client deadline `timeout` from now (InfiniteDuration:
// none).
grpc::Status Classify(v1::Inference::Stub& stub, const v1::ClassifyRequest& request,
                      v1::ClassifyResponse* response, absl::Duration timeout = absl::Seconds(60));

}  // namespace testing
}  // namespace hapi
