// inference.GRPCInferenceService (the Open Inference Protocol) end to end,
// in-process: the real InferenceServer over the fake model, driven through the
// generated OIP stub on the same port as hapi.v1. Answers are checked against
// EarlyExitExecutor::Run on the same variant and images, and against hapi.v1.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "core/fake_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "rpc/grpc_status.h"
#include "server/oip_service.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace testing {
namespace {

using ::inference::GRPCInferenceService;
using ::inference::ModelInferRequest;
using ::inference::ModelInferResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kImages = 40;

absl::Status ToAbsl(const grpc::Status& s) { return FromGrpcStatus(s); }

std::unique_ptr<GRPCInferenceService::Stub> OipStub(const TestServer& server) {
  return GRPCInferenceService::NewStub(server.NewChannel());
}

TestServerOptions WithVariant(const std::string& variant) {
  TestServerOptions options;
  options.variant = variant;
  return options;
}

// How a test sends images.
enum class Encoding { kRawUint8, kTypedUint8, kRawFp32, kTypedFp32, kRawPng, kTypedPng };

std::string BytesOf(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A ModelInfer request for the fixture's images `images`, NCHW.
ModelInferRequest ImagesRequest(const std::vector<int>& images, Encoding encoding) {
  const ServerFixture& f = Fixture();
  ModelInferRequest r;
  r.set_model_name(kModelName);
  auto* input = r.add_inputs();
  input->set_name("image");
  const int64_t n = static_cast<int64_t>(images.size());
  const v1::TensorShape s = f.model->input_shape();
  for (int64_t d : {n, int64_t{s.channels()}, int64_t{s.height()}, int64_t{s.width()}}) {
    input->add_shape(d);
  }
  std::string raw;
  for (int i : images) {
    const uint8_t* image = f.image(i);
    switch (encoding) {
      case Encoding::kRawUint8:
        input->set_datatype("UINT8");
        raw.append(reinterpret_cast<const char*>(image), kImagePixels);
        break;
      case Encoding::kTypedUint8:
        input->set_datatype("UINT8");
        for (int p = 0; p < kImagePixels; ++p)
          input->mutable_contents()->add_uint_contents(image[p]);
        break;
      case Encoding::kRawFp32:
        input->set_datatype("FP32");
        raw += BytesOf(f.Pixels(i));
        break;
      case Encoding::kTypedFp32:
        input->set_datatype("FP32");
        for (float v : f.Pixels(i)) input->mutable_contents()->add_fp32_contents(v);
        break;
      case Encoding::kRawPng:
      case Encoding::kTypedPng: {
        input->set_datatype("BYTES");
        const std::string png = EncodePng(image, kImageSide, kImageSide, 1);
        if (encoding == Encoding::kTypedPng) {
          input->mutable_contents()->add_bytes_contents(png);
        } else {
          const uint32_t size = static_cast<uint32_t>(png.size());
          raw.append(reinterpret_cast<const char*>(&size), sizeof(size));
          raw += png;
        }
        break;
      }
    }
  }
  if (encoding == Encoding::kRawPng || encoding == Encoding::kTypedPng) {
    input->clear_shape();
    input->add_shape(n);
  }
  if (!raw.empty()) r.add_raw_input_contents(raw);
  return r;
}

std::vector<int> Range(int from, int to) {
  std::vector<int> v;
  for (int i = from; i < to; ++i) v.push_back(i);
  return v;
}

grpc::Status Infer(GRPCInferenceService::Stub& stub, const ModelInferRequest& request,
                   ModelInferResponse* response, absl::Duration timeout = absl::Seconds(60)) {
  grpc::ClientContext ctx;
  if (timeout != absl::InfiniteDuration()) {
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  return stub.ModelInfer(&ctx, request, response);
}

// The outputs as a stock client reads them: raw_output_contents, by position.
struct Outputs {
  std::vector<std::string> names;
  std::vector<int64_t> label;
  std::vector<float> confidence;
  std::vector<int32_t> exit;
  std::vector<float> probabilities;
  std::vector<int64_t> probabilities_shape;
};

template <typename T>
std::vector<T> FromBytes(const std::string& bytes) {
  std::vector<T> v(bytes.size() / sizeof(T));
  EXPECT_EQ(bytes.size() % sizeof(T), 0u);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

Outputs Decode(const ModelInferResponse& r) {
  Outputs out;
  EXPECT_EQ(r.outputs_size(), r.raw_output_contents_size());
  for (int k = 0; k < r.outputs_size() && k < r.raw_output_contents_size(); ++k) {
    const auto& t = r.outputs(k);
    const std::string& bytes = r.raw_output_contents(k);
    out.names.push_back(t.name());
    EXPECT_FALSE(t.has_contents()) << t.name();
    if (t.name() == "label") {
      EXPECT_EQ(t.datatype(), "INT64");
      out.label = FromBytes<int64_t>(bytes);
      EXPECT_THAT(t.shape(), ElementsAre(static_cast<int64_t>(out.label.size())));
    } else if (t.name() == "confidence") {
      EXPECT_EQ(t.datatype(), "FP32");
      out.confidence = FromBytes<float>(bytes);
      EXPECT_THAT(t.shape(), ElementsAre(static_cast<int64_t>(out.confidence.size())));
    } else if (t.name() == "exit") {
      EXPECT_EQ(t.datatype(), "INT32");
      out.exit = FromBytes<int32_t>(bytes);
      EXPECT_THAT(t.shape(), ElementsAre(static_cast<int64_t>(out.exit.size())));
    } else if (t.name() == "probabilities") {
      EXPECT_EQ(t.datatype(), "FP32");
      out.probabilities = FromBytes<float>(bytes);
      out.probabilities_shape.assign(t.shape().begin(), t.shape().end());
    } else {
      ADD_FAILURE() << "unexpected output " << t.name();
    }
  }
  return out;
}

// Sample k of `out` answers fixture image `image` as the executor does.
void ExpectAnswer(const Outputs& out, size_t k, const SampleResult& want,
                  const std::string& where) {
  ASSERT_LT(k, out.label.size()) << where;
  ASSERT_LT(k, out.confidence.size()) << where;
  ASSERT_LT(k, out.exit.size()) << where;
  EXPECT_EQ(out.label[k], want.label) << where;
  EXPECT_NEAR(out.confidence[k], want.confidence, 1e-6) << where;
  EXPECT_EQ(out.exit[k], want.exit_index) << where;
}

std::string StringParameter(const ModelInferResponse& r, const std::string& key) {
  auto it = r.parameters().find(key);
  return it == r.parameters().end() ? "<none>" : it->second.string_param();
}

// --- health and metadata -----------------------------------------------------

TEST(OipHealthTest, LiveReadyAndServerMetadata) {
  TestServer server;
  auto stub = OipStub(server);
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_OK(ToAbsl(stub->ServerLive(&ctx, {}, &r)));
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_OK(ToAbsl(stub->ServerReady(&ctx, {}, &r)));
    EXPECT_TRUE(r.ready());
  }
  grpc::ClientContext ctx;
  inference::ServerMetadataResponse r;
  ASSERT_OK(ToAbsl(stub->ServerMetadata(&ctx, {}, &r)));
  EXPECT_EQ(r.name(), "hapi-server");
  EXPECT_FALSE(r.version().empty());
  EXPECT_TRUE(r.extensions().empty());  // none of the optional extensions
}

bool ModelReady(GRPCInferenceService::Stub& stub, const std::string& name,
                const std::string& version) {
  grpc::ClientContext ctx;
  inference::ModelReadyRequest request;
  request.set_name(name);
  request.set_version(version);
  inference::ModelReadyResponse r;
  EXPECT_OK(ToAbsl(stub.ModelReady(&ctx, request, &r)));
  return r.ready();
}

TEST(OipHealthTest, ModelReadyByNameAndVersion) {
  TestServer server;
  auto stub = OipStub(server);
  EXPECT_TRUE(ModelReady(*stub, kModelName, ""));
  EXPECT_TRUE(ModelReady(*stub, kModelName, "v1"));
  EXPECT_FALSE(ModelReady(*stub, kModelName, "v2"));
  EXPECT_FALSE(ModelReady(*stub, "other", ""));
  EXPECT_FALSE(ModelReady(*stub, "", ""));
  // After a swap the new variant is the version.
  ASSERT_OK(server.servables().Load("v2").status());
  EXPECT_TRUE(ModelReady(*stub, kModelName, "v2"));
  EXPECT_FALSE(ModelReady(*stub, kModelName, "v1"));
}

TEST(OipHealthTest, NothingReadyUntilAVariantIsLoaded) {
  TestServer server(WithVariant(""));
  auto stub = OipStub(server);
  grpc::ClientContext live_ctx;
  inference::ServerLiveResponse live;
  ASSERT_OK(ToAbsl(stub->ServerLive(&live_ctx, {}, &live)));
  EXPECT_TRUE(live.live());
  grpc::ClientContext ready_ctx;
  inference::ServerReadyResponse ready;
  ASSERT_OK(ToAbsl(stub->ServerReady(&ready_ctx, {}, &ready)));
  EXPECT_FALSE(ready.ready());
  EXPECT_FALSE(ModelReady(*stub, kModelName, ""));
  grpc::ClientContext ctx;
  inference::ModelMetadataRequest request;
  request.set_name(kModelName);
  inference::ModelMetadataResponse metadata;
  EXPECT_THAT(ToAbsl(stub->ModelMetadata(&ctx, request, &metadata)),
              StatusIs(absl::StatusCode::kUnavailable));
  ModelInferResponse r;
  EXPECT_THAT(ToAbsl(Infer(*stub, ImagesRequest({0}, Encoding::kRawUint8), &r)),
              StatusIs(absl::StatusCode::kUnavailable));
  // Loading makes everything ready.
  ASSERT_OK(server.servables().Load("v1").status());
  EXPECT_TRUE(ModelReady(*stub, kModelName, ""));
  EXPECT_OK(ToAbsl(Infer(*stub, ImagesRequest({0}, Encoding::kRawUint8), &r)));
}

TEST(OipMetadataTest, DescribesTheModelsTensors) {
  const ServerFixture& f = Fixture();
  TestServer server;
  auto stub = OipStub(server);
  grpc::ClientContext ctx;
  inference::ModelMetadataRequest request;
  request.set_name(kModelName);
  inference::ModelMetadataResponse r;
  ASSERT_OK(ToAbsl(stub->ModelMetadata(&ctx, request, &r)));
  EXPECT_EQ(r.name(), kModelName);
  EXPECT_THAT(r.versions(), ElementsAre("v1"));
  EXPECT_FALSE(r.platform().empty());
  const v1::TensorShape s = f.model->input_shape();
  ASSERT_EQ(r.inputs_size(), 1);
  EXPECT_EQ(r.inputs(0).name(), "image");
  EXPECT_EQ(r.inputs(0).datatype(), "FP32");
  EXPECT_THAT(r.inputs(0).shape(), ElementsAre(-1, s.channels(), s.height(), s.width()));
  ASSERT_EQ(r.outputs_size(), 4);
  EXPECT_EQ(r.outputs(0).name(), "label");
  EXPECT_EQ(r.outputs(0).datatype(), "INT64");
  EXPECT_THAT(r.outputs(0).shape(), ElementsAre(-1));
  EXPECT_EQ(r.outputs(1).name(), "confidence");
  EXPECT_EQ(r.outputs(1).datatype(), "FP32");
  EXPECT_EQ(r.outputs(2).name(), "exit");
  EXPECT_EQ(r.outputs(2).datatype(), "INT32");
  EXPECT_EQ(r.outputs(3).name(), "probabilities");
  EXPECT_EQ(r.outputs(3).datatype(), "FP32");
  EXPECT_THAT(r.outputs(3).shape(), ElementsAre(-1, f.model->num_classes()));
}

TEST(OipMetadataTest, UnknownModelOrVersionIsNotFound) {
  TestServer server;
  auto stub = OipStub(server);
  for (const auto& [name, version] : std::vector<std::pair<std::string, std::string>>{
           {"other", ""}, {"", ""}, {kModelName, "v2"}, {std::string(200, 'x'), ""}}) {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest request;
    request.set_name(name);
    request.set_version(version);
    inference::ModelMetadataResponse r;
    EXPECT_THAT(ToAbsl(stub->ModelMetadata(&ctx, request, &r)),
                StatusIs(absl::StatusCode::kNotFound))
        << name << " " << version;
  }
}

// --- inference ---------------------------------------------------------------

TEST(OipInferTest, AnswersLikeTheExecutor) {
  TestServer server;
  auto stub = OipStub(server);
  for (int i = 0; i < kImages; ++i) {
    ModelInferRequest request = ImagesRequest({i}, Encoding::kRawUint8);
    request.set_id(absl::StrCat("req-", i));
    ModelInferResponse r;
    ASSERT_OK(ToAbsl(Infer(*stub, request, &r)));
    EXPECT_EQ(r.model_name(), kModelName);
    EXPECT_EQ(r.model_version(), "v1");
    EXPECT_EQ(r.id(), absl::StrCat("req-", i));
    EXPECT_EQ(StringParameter(r, "hapi_variant"), "v1");
    EXPECT_EQ(StringParameter(r, "hapi_device"), "dev");
    const Outputs out = Decode(r);
    EXPECT_THAT(out.names, ElementsAre("label", "confidence", "exit"));
    ExpectAnswer(out, 0, Expected("v1", i), absl::StrCat("image ", i));
  }
}

TEST(OipInferTest, AgreesWithHapiV1) {
  const ServerFixture& f = Fixture();
  TestServer server;
  auto stub = OipStub(server);
  for (int i = 0; i < kImages; ++i) {
    v1::ClassifyResponse v1_answer;
    ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(i)), &v1_answer)));
    ModelInferResponse r;
    ASSERT_OK(ToAbsl(Infer(*stub, ImagesRequest({i}, Encoding::kRawPng), &r)));
    const Outputs out = Decode(r);
    ASSERT_EQ(out.label.size(), 1u);
    EXPECT_EQ(out.label[0], v1_answer.label()) << i;
    EXPECT_EQ(out.exit[0], v1_answer.exit().exit_index()) << i;
    EXPECT_FLOAT_EQ(out.confidence[0], v1_answer.confidence()) << i;
  }
}

TEST(OipInferTest, EveryEncodingGivesTheSameAnswers) {
  TestServer server;
  auto stub = OipStub(server);
  const std::vector<int> images = Range(0, 12);
  for (Encoding e : {Encoding::kRawUint8, Encoding::kTypedUint8, Encoding::kRawFp32,
                     Encoding::kTypedFp32, Encoding::kRawPng, Encoding::kTypedPng}) {
    ModelInferResponse r;
    ASSERT_OK(ToAbsl(Infer(*stub, ImagesRequest(images, e), &r))) << static_cast<int>(e);
    const Outputs out = Decode(r);
    for (size_t k = 0; k < images.size(); ++k) {
      ExpectAnswer(out, k, Expected("v1", images[k]),
                   absl::StrCat("encoding ", static_cast<int>(e), " image ", images[k]));
    }
  }
}

// One request of N gives what N requests of one give, with batching off
// (samples run one after another) and on (they meet in the batcher's queue).
TEST(OipInferTest, BatchOfNEqualsNSingleRequests) {
  for (int max_batch : {1, 16}) {
    TestServerOptions options;
    options.batcher.max_batch = max_batch;
    options.batcher.max_wait = absl::Milliseconds(max_batch > 1 ? 20 : 0);
    TestServer server(options);
    auto stub = OipStub(server);
    const std::vector<int> images = Range(0, 16);
    ModelInferResponse batch;
    ASSERT_OK(ToAbsl(Infer(*stub, ImagesRequest(images, Encoding::kRawFp32), &batch)));
    const Outputs batched = Decode(batch);
    ASSERT_EQ(batched.label.size(), images.size());
    for (size_t k = 0; k < images.size(); ++k) {
      ModelInferResponse single;
      ASSERT_OK(ToAbsl(Infer(*stub, ImagesRequest({images[k]}, Encoding::kRawFp32), &single)));
      const Outputs one = Decode(single);
      ASSERT_EQ(one.label.size(), 1u);
      const std::string where = absl::StrCat("max_batch ", max_batch, " image ", images[k]);
      EXPECT_EQ(batched.label[k], one.label[0]) << where;
      EXPECT_EQ(batched.exit[k], one.exit[0]) << where;
      EXPECT_NEAR(batched.confidence[k], one.confidence[0], 1e-6) << where;
      ExpectAnswer(batched, k, Expected("v1", images[k]), where);
    }
  }
}

TEST(OipInferTest, NhwcLayoutParameter) {
  const ServerFixture& f = Fixture();
  TestServer server;
  auto stub = OipStub(server);
  const v1::TensorShape s = f.model->input_shape();
  ModelInferRequest request = ImagesRequest({3, 4}, Encoding::kRawUint8);
  auto* shape = request.mutable_inputs(0)->mutable_shape();
  shape->Set(1, s.height());
  shape->Set(2, s.width());
  shape->Set(3, s.channels());
  ModelInferResponse r;
  // NCHW (the default) does not take [N, H, W, C] ...
  if (s.channels() != s.width()) {
    EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'image'")));
  }
  // ... NHWC does, on the request or on the tensor.
  (*request.mutable_parameters())["hapi_layout"].set_string_param("NHWC");
  ASSERT_OK(ToAbsl(Infer(*stub, request, &r)));
  Outputs out = Decode(r);
  ExpectAnswer(out, 0, Expected("v1", 3), "image 3");
  ExpectAnswer(out, 1, Expected("v1", 4), "image 4");
  request.clear_parameters();
  (*request.mutable_inputs(0)->mutable_parameters())["hapi_layout"].set_string_param("nhwc");
  ASSERT_OK(ToAbsl(Infer(*stub, request, &r)));
  out = Decode(r);
  ExpectAnswer(out, 1, Expected("v1", 4), "image 4, layout on the tensor");
}

TEST(OipInferTest, ProbabilitiesOnRequestInTheRequestedOrder) {
  const ServerFixture& f = Fixture();
  TestServer server;
  auto stub = OipStub(server);
  const std::vector<int> images = Range(0, 20);
  ModelInferRequest request = ImagesRequest(images, Encoding::kRawUint8);
  request.add_outputs()->set_name("probabilities");
  request.add_outputs()->set_name("exit");
  request.add_outputs()->set_name("label");
  ModelInferResponse r;
  ASSERT_OK(ToAbsl(Infer(*stub, request, &r)));
  const Outputs out = Decode(r);
  EXPECT_THAT(out.names, ElementsAre("probabilities", "exit", "label"));
  const int classes = f.model->num_classes();
  EXPECT_THAT(out.probabilities_shape, ElementsAre(static_cast<int64_t>(images.size()), classes));
  ASSERT_EQ(out.probabilities.size(), images.size() * classes);
  for (size_t k = 0; k < images.size(); ++k) {
    const SampleResult& want = Expected("v1", images[k]);
    auto row = out.probabilities.begin() + k * classes;
    const auto max = std::max_element(row, row + classes);
    EXPECT_EQ(max - row, want.label) << images[k];
    EXPECT_NEAR(*max, want.confidence, 1e-5) << images[k];
    EXPECT_NEAR(std::accumulate(row, row + classes, 0.0), 1.0, 1e-4) << images[k];
    EXPECT_EQ(out.exit[k], want.exit_index);
    EXPECT_EQ(out.label[k], want.label);
  }
  // Several exits answer this batch, so the second pass covered more than one.
  std::set<int32_t> exits(out.exit.begin(), out.exit.end());
  EXPECT_GT(exits.size(), 1u);
}

TEST(OipInferTest, VersionSelectsTheServedVariant) {
  TestServer server;
  auto stub = OipStub(server);
  ModelInferRequest request = ImagesRequest({5}, Encoding::kRawUint8);
  request.set_model_version("v1");
  ModelInferResponse r;
  ASSERT_OK(ToAbsl(Infer(*stub, request, &r)));
  EXPECT_EQ(r.model_version(), "v1");
  // Another variant is not loaded on demand: LoadVariant is an operator's call.
  request.set_model_version("v2");
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'v2'")));
  request.set_model_version("");
  request.set_model_name("tin");
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'tin'")));
  // After a swap, the new variant is served and named.
  ASSERT_OK(server.servables().Load("v2").status());
  request.set_model_name(kModelName);
  request.set_model_version("v2");
  ASSERT_OK(ToAbsl(Infer(*stub, request, &r)));
  EXPECT_EQ(StringParameter(r, "hapi_variant"), "v2");
  ExpectAnswer(Decode(r), 0, Expected("v2", 5), "v2");
}

// --- deadlines and budgets ---------------------------------------------------

// An image the "deep" variant (thresholds 1.0) answers at its final exit.
int DeepImage() {
  const ServerFixture& f = Fixture();
  for (int i = 0; i < f.num_images; ++i) {
    if (Expected("deep", i).exits_evaluated == 3) return i;
  }
  return -1;
}

TEST(OipDeadlineTest, LatencyBudgetAnswersFromTheDeepestExitThatFits) {
  const int i = DeepImage();
  ASSERT_GE(i, 0);
  TestServer server(WithVariant("deep"));
  auto stub = OipStub(server);
  ModelInferRequest request = ImagesRequest({i, i}, Encoding::kRawUint8);
  ModelInferResponse full;
  ASSERT_OK(ToAbsl(Infer(*stub, request, &full, absl::InfiniteDuration())));
  EXPECT_EQ(full.parameters().at("hapi_cut_by_deadline").int64_param(), 0);
  EXPECT_EQ(Decode(full).exit[0], Fixture().model->final_exit());
  // Exit 0 is predicted at ~10 ms, exit 2 five seconds later: a budget of
  // one second allows exit 0 only, as a one-second gRPC deadline does.
  for (bool as_string : {false, true}) {
    auto& budget = (*request.mutable_parameters())["hapi_latency_budget_ms"];
    if (as_string) {
      budget.set_string_param("1000.5");
    } else {
      budget.set_int64_param(1000);
    }
    ModelInferResponse cut;
    const absl::Time start = absl::Now();
    ASSERT_OK(ToAbsl(Infer(*stub, request, &cut, absl::InfiniteDuration())));
    EXPECT_LT(absl::Now() - start, absl::Seconds(1));
    EXPECT_EQ(cut.parameters().at("hapi_cut_by_deadline").int64_param(), 2);
    const Outputs out = Decode(cut);
    ASSERT_FALSE(Expected("deep", i).steps.empty());
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(out.exit[k], 0);
      EXPECT_EQ(out.label[k], Expected("deep", i).steps[0].label);
    }
  }
  // The gRPC deadline does the same without the parameter.
  ModelInferResponse by_deadline;
  ASSERT_OK(ToAbsl(
      Infer(*stub, ImagesRequest({i}, Encoding::kRawUint8), &by_deadline, absl::Seconds(1))));
  EXPECT_EQ(Decode(by_deadline).exit[0], 0);
}

TEST(OipDeadlineTest, NoTimeForTheFirstExitIsDeadlineExceeded) {
  TestServer server(WithVariant("stuck"));
  auto stub = OipStub(server);
  ModelInferRequest request = ImagesRequest({0, 1, 2}, Encoding::kRawUint8);
  (*request.mutable_parameters())["hapi_latency_budget_ms"].set_int64_param(5000);
  ModelInferResponse r;
  const absl::Time start = absl::Now();
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r, absl::InfiniteDuration())),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("first exit")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() - std::chrono::microseconds(1));
  EXPECT_THAT(ToAbsl(stub->ModelInfer(&ctx, request, &r)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  request.clear_parameters();
  ASSERT_OK(ToAbsl(Infer(*stub, request, &r, absl::InfiniteDuration())));
  EXPECT_EQ(StringParameter(r, "hapi_variant"), "stuck");
}

// --- errors ------------------------------------------------------------------

struct BadRequest {
  std::string what;
  std::function<void(ModelInferRequest*)> mutate;
  std::string message;  // a substring of the error
};

std::vector<BadRequest> BadRequests() {
  auto input = [](ModelInferRequest* r) { return r->mutable_inputs(0); };
  auto shape = [input](ModelInferRequest* r, std::vector<int64_t> dims) {
    input(r)->clear_shape();
    for (int64_t d : dims) input(r)->add_shape(d);
  };
  return {
      {"no input", [](ModelInferRequest* r) { r->clear_inputs(); }, "one input"},
      {"two inputs", [](ModelInferRequest* r) { *r->add_inputs() = r->inputs(0); }, "one input"},
      {"unknown input", [input](ModelInferRequest* r) { input(r)->set_name("img"); }, "'img'"},
      {"datatype", [input](ModelInferRequest* r) { input(r)->set_datatype("INT32"); },
       "'image' has datatype 'INT32'"},
      {"no datatype", [input](ModelInferRequest* r) { input(r)->clear_datatype(); }, "'image'"},
      {"no shape", [input](ModelInferRequest* r) { input(r)->clear_shape(); }, "'image'"},
      {"3-D shape",
       [shape](ModelInferRequest* r) {
         shape(r, {1, 28, 28});
       },
       "'image'"},
      {"width",
       [shape](ModelInferRequest* r) {
         shape(r, {1, 1, 28, 27});
       },
       "[1, 1, 28, 27]"},
      {"batch 0",
       [shape](ModelInferRequest* r) {
         shape(r, {0, 1, 28, 28});
       },
       "batch"},
      {"batch -1",
       [shape](ModelInferRequest* r) {
         shape(r, {-1, 1, 28, 28});
       },
       "batch"},
      {"huge batch",
       [shape](ModelInferRequest* r) {
         shape(r, {std::numeric_limits<int64_t>::max(), 1, 28, 28});
       },
       "batch"},
      {"batch beyond the data",
       [shape](ModelInferRequest* r) {
         shape(r, {3, 1, 28, 28});
       },
       "bytes of raw contents"},
      {"short raw", [](ModelInferRequest* r) { r->mutable_raw_input_contents(0)->resize(100); },
       "'image' has 100 bytes"},
      {"raw and typed",
       [input](ModelInferRequest* r) { input(r)->mutable_contents()->add_uint_contents(1); },
       "both"},
      {"two raw", [](ModelInferRequest* r) { r->add_raw_input_contents("x"); },
       "raw_input_contents"},
      {"unknown output", [](ModelInferRequest* r) { r->add_outputs()->set_name("logits"); },
       "'logits'"},
      {"output twice",
       [](ModelInferRequest* r) {
         r->add_outputs()->set_name("label");
         r->add_outputs()->set_name("label");
       },
       "twice"},
      {"unknown hapi_ parameter",
       [](ModelInferRequest* r) { (*r->mutable_parameters())["hapi_budget"].set_int64_param(3); },
       "'hapi_budget'"},
      {"budget 0",
       [](ModelInferRequest* r) {
         (*r->mutable_parameters())["hapi_latency_budget_ms"].set_int64_param(0);
       },
       "hapi_latency_budget_ms"},
      {"budget not a number",
       [](ModelInferRequest* r) {
         (*r->mutable_parameters())["hapi_latency_budget_ms"].set_string_param("soon");
       },
       "hapi_latency_budget_ms"},
      {"budget a bool",
       [](ModelInferRequest* r) {
         (*r->mutable_parameters())["hapi_latency_budget_ms"].set_bool_param(true);
       },
       "hapi_latency_budget_ms"},
      {"budget on the tensor",
       [input](ModelInferRequest* r) {
         (*input(r)->mutable_parameters())["hapi_latency_budget_ms"].set_int64_param(5);
       },
       "input 'image' parameter"},
      {"layout",
       [](ModelInferRequest* r) {
         (*r->mutable_parameters())["hapi_layout"].set_string_param("CHWN");
       },
       "hapi_layout"},
  };
}

TEST(OipErrorTest, BadRequestsAreInvalidArgumentSayingWhatIsWrong) {
  TestServer server;
  auto stub = OipStub(server);
  for (const BadRequest& bad : BadRequests()) {
    ModelInferRequest request = ImagesRequest({0, 1}, Encoding::kRawUint8);
    bad.mutate(&request);
    ModelInferResponse r;
    EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(bad.message)))
        << bad.what;
  }
  // Parameters without the hapi_ prefix belong to other servers and clients.
  ModelInferRequest request = ImagesRequest({0}, Encoding::kRawUint8);
  (*request.mutable_parameters())["priority"].set_int64_param(1);
  (*request.mutable_parameters())["binary_data_output"].set_bool_param(true);
  ModelInferResponse r;
  EXPECT_OK(ToAbsl(Infer(*stub, request, &r)));
}

TEST(OipErrorTest, BadValuesNameTheTensorAndTheSample) {
  const ServerFixture& f = Fixture();
  TestServer server;
  auto stub = OipStub(server);
  ModelInferResponse r;
  // Floats outside [0, 1] or not numbers.
  for (float bad : {1.5f, -0.1f, std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    ModelInferRequest request = ImagesRequest({0, 1}, Encoding::kTypedFp32);
    request.mutable_inputs(0)->mutable_contents()->set_fp32_contents(kImagePixels + 7, bad);
    EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'image' sample 1")))
        << bad;
  }
  // A UINT8 value beyond 255, typed contents of the wrong type or count.
  ModelInferRequest request = ImagesRequest({0}, Encoding::kTypedUint8);
  request.mutable_inputs(0)->mutable_contents()->set_uint_contents(3, 256);
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uint_contents[3]")));
  request = ImagesRequest({0}, Encoding::kTypedFp32);
  request.mutable_inputs(0)->set_datatype("UINT8");
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 uint_contents")));
  request = ImagesRequest({0}, Encoding::kTypedFp32);
  request.mutable_inputs(0)->mutable_contents()->add_fp32_contents(0.5f);
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp32_contents")));
  // BYTES that are not an image, a malformed length prefix, a shape that is
  // not [N], a count that does not match.
  request = ImagesRequest({0, 1}, Encoding::kTypedPng);
  request.mutable_inputs(0)->mutable_contents()->set_bytes_contents(1, "GIF89a");
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'image' sample 1")));
  request = ImagesRequest({0, 1}, Encoding::kRawPng);
  (*request.mutable_raw_input_contents(0))[0] ^= 0x40;
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("BYTES elements")));
  request = ImagesRequest({0}, Encoding::kRawPng);
  request.mutable_inputs(0)->add_shape(2);
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[1, 2]")));
  request = ImagesRequest({0}, Encoding::kTypedPng);
  request.mutable_inputs(0)->set_shape(0, 2);
  EXPECT_THAT(ToAbsl(Infer(*stub, request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 bytes_contents")));
  // The server is still fine.
  EXPECT_OK(ToAbsl(Infer(*stub, ImagesRequest({0}, Encoding::kRawPng), &r)));
  (void)f;
}

TEST(OipErrorTest, BatchBeyondTheQueueCapacityIsRefused) {
  TestServerOptions options;
  options.batcher.queue_capacity = 4;
  TestServer server(options);
  auto stub = OipStub(server);
  ModelInferResponse r;
  EXPECT_THAT(ToAbsl(Infer(*stub, ImagesRequest(Range(0, 5), Encoding::kRawUint8), &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[1, 4]")));
  EXPECT_OK(ToAbsl(Infer(*stub, ImagesRequest(Range(0, 4), Encoding::kRawUint8), &r)));
}

// Random requests, mostly wrong, never crash the server nor get INTERNAL.
TEST(OipErrorTest, RandomRequestsNeverCrashTheServer) {
  TestServer server;
  auto stub = OipStub(server);
  std::mt19937 rng(7);
  const std::vector<std::string> types = {"UINT8", "FP32", "BYTES", "INT64", "", "FP16"};
  const std::vector<int64_t> dims = {-1,
                                     0,
                                     1,
                                     2,
                                     3,
                                     28,
                                     29,
                                     1 << 20,
                                     std::numeric_limits<int64_t>::min(),
                                     std::numeric_limits<int64_t>::max()};
  int ok = 0;
  for (int round = 0; round < 400; ++round) {
    ModelInferRequest request =
        ImagesRequest({round % 3}, round % 2 ? Encoding::kRawUint8 : Encoding::kTypedFp32);
    auto* input = request.mutable_inputs(0);
    if (rng() % 2) input->set_datatype(types[rng() % types.size()]);
    if (rng() % 2) input->set_shape(rng() % input->shape_size(), dims[rng() % dims.size()]);
    if (rng() % 3 == 0) input->add_shape(dims[rng() % dims.size()]);
    if (request.raw_input_contents_size() > 0 && rng() % 2) {
      std::string& raw = *request.mutable_raw_input_contents(0);
      raw.resize(rng() % (raw.size() + 8));
      for (char& c : raw) {
        if (rng() % 50 == 0) c = static_cast<char>(rng());
      }
    }
    if (rng() % 4 == 0) (*request.mutable_parameters())["hapi_layout"].set_string_param("NHWC");
    ModelInferResponse r;
    grpc::Status st = Infer(*stub, request, &r);
    if (st.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << round << ": " << st.error_message() << "\n"
        << request.inputs(0).ShortDebugString();
  }
  EXPECT_GT(ok, 0);
  ModelInferResponse r;
  EXPECT_OK(ToAbsl(Infer(*stub, ImagesRequest({0}, Encoding::kRawUint8), &r)));
}

// --- load ----------------------------------------------------------------------

// Batches whose later samples find the queue full fail RESOURCE_EXHAUSTED as a
// whole; the samples queued before stop early; the rest answer correctly.
TEST(OipLoadTest, FullQueueIsResourceExhaustedForTheWholeBatch) {
  TestServerOptions options;
  options.batcher.queue_capacity = 3;
  options.batcher.workers = 1;
  options.batcher.run_inline = false;
  options.load_model = FakeModelLoader(absl::Milliseconds(1));
  TestServer server(options);
  auto stub = OipStub(server);
  const std::vector<int> images = {0, 1, 2};
  const ModelInferRequest request = ImagesRequest(images, Encoding::kRawUint8);
  int ok = 0, exhausted = 0;
  // Alone, a call fits the queue; among many, some find it full.
  for (int kConcurrent : {1, 24, 24, 24, 24}) {
    if (ok > 0 && exhausted > 0) break;
    std::vector<grpc::ClientContext> contexts(kConcurrent);
    std::vector<ModelInferResponse> responses(kConcurrent);
    std::vector<grpc::Status> statuses(kConcurrent);
    absl::BlockingCounter done(kConcurrent);
    for (int i = 0; i < kConcurrent; ++i) {
      stub->async()->ModelInfer(&contexts[i], &request, &responses[i], [&, i](grpc::Status s) {
        statuses[i] = std::move(s);
        done.DecrementCount();
      });
    }
    done.Wait();
    for (int i = 0; i < kConcurrent; ++i) {
      if (statuses[i].ok()) {
        ++ok;
        const Outputs out = Decode(responses[i]);
        for (size_t k = 0; k < images.size(); ++k) {
          ExpectAnswer(out, k, Expected("v1", images[k]), absl::StrCat("call ", i));
        }
      } else {
        EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
            << statuses[i].error_message();
        exhausted += statuses[i].error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
      }
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(exhausted, 0);
  // Nothing is left behind: a request alone is answered.
  ModelInferResponse r;
  EXPECT_OK(ToAbsl(Infer(*stub, ImagesRequest({0}, Encoding::kRawUint8), &r)));
}

TEST(OipLoadTest, ClientsGoingAwayLeaveTheServerHealthy) {
  TestServerOptions options;
  options.load_model = FakeModelLoader(absl::Milliseconds(20));
  options.batcher.run_inline = false;
  TestServer server(options);
  auto stub = OipStub(server);
  const ModelInferRequest request = ImagesRequest(Range(0, 8), Encoding::kRawUint8);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    ModelInferResponse r;
    absl::Notification finished;
    grpc::Status status;
    stub->async()->ModelInfer(&ctx, &request, &r, [&](grpc::Status s) {
      status = std::move(s);
      finished.Notify();
    });
    absl::SleepFor(absl::Milliseconds(30));
    ctx.TryCancel();
    finished.WaitForNotification();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  }
  ModelInferResponse r;
  ASSERT_OK(ToAbsl(Infer(*stub, ImagesRequest({7}, Encoding::kRawUint8), &r)));
  ExpectAnswer(Decode(r), 0, Expected("v1", 7), "after cancellations");
}

}  // namespace
}  // namespace testing
}  // namespace hapi
