// hapi.v1.Inference end to end, in-process: the real ServableManager,
// Batcher and InferenceService behind a gRPC server on 127.0.0.1, driven
// through the generated stub. Answers are checked against
// EarlyExitExecutor::Run on the same variant and images.
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "core/device_profile.h"
#include "core/fake_model.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "rpc/grpc_status.h"
#include "server/model_registry.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::FloatEq;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pointwise;

constexpr int kImages = 50;

absl::Status ToAbsl(const grpc::Status& s) { return FromGrpcStatus(s); }

// The answer fields a response must share with the executor.
void ExpectSameAnswer(const v1::ClassifyResponse& got, const SampleResult& want,
                      const std::string& where) {
  EXPECT_EQ(got.label(), want.label) << where;
  EXPECT_EQ(got.exit().exit_index(), want.exit_index) << where;
  EXPECT_EQ(got.exit().depth(), want.depth) << where;
  EXPECT_EQ(got.exits_evaluated(), want.exits_evaluated) << where;
  EXPECT_NEAR(got.confidence(), want.confidence, 1e-6) << where;
  EXPECT_EQ(got.cut_by_deadline(), want.cut_short) << where;
}

TestServerOptions WithVariant(const std::string& variant) {
  TestServerOptions options;
  options.variant = variant;
  return options;
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

TEST(ClassifyTest, AnswersLikeTheExecutor) {
  const ServerFixture& f = Fixture();
  TestServer server;
  std::set<int> exits_seen;
  for (int i = 0; i < kImages; ++i) {
    v1::ClassifyResponse r;
    ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(i), absl::StrCat("img", i)), &r)));
    const SampleResult& want = Expected("v1", i);
    ExpectSameAnswer(r, want, absl::StrCat("image ", i));
    EXPECT_EQ(r.class_name(), f.model->manifest().class_names(want.label));
    EXPECT_EQ(r.exit().label(), want.label);
    EXPECT_EQ(r.exit().class_name(), r.class_name());
    EXPECT_EQ(r.variant(), "v1");
    EXPECT_EQ(r.request_id(), absl::StrCat("img", i));
    EXPECT_GT(r.server_latency_s(), 0);
    EXPECT_GE(r.queue_s(), 0);
    EXPECT_EQ(r.batch_size(), 1);
    EXPECT_FALSE(r.final());
    EXPECT_EQ(r.error_code(), 0);
    exits_seen.insert(r.exit().exit_index());
  }
  // Median thresholds: the images must not all leave at the same exit, or
  // this test would prove little.
  EXPECT_GE(exits_seen.size(), 2u);
}

TEST(ClassifyTest, PngRawUint8AndRawFloat32Agree) {
  const ServerFixture& f = Fixture();
  TestServer server;
  int resized_agree = 0;
  constexpr int kN = 20;
  for (int i = 0; i < kN; ++i) {
    v1::ClassifyResponse raw, png, rgb, floats;
    ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(i)), &raw)));

    v1::ClassifyRequest req;
    req.mutable_image()->set_encoded(EncodePng(f.image(i), 28, 28, 1));
    ASSERT_OK(ToAbsl(Classify(server.stub(), req, &png)));
    EXPECT_EQ(png.label(), raw.label()) << "image " << i;
    EXPECT_EQ(png.exit().exit_index(), raw.exit().exit_index()) << "image " << i;
    EXPECT_EQ(png.exits_evaluated(), raw.exits_evaluated()) << "image " << i;
    EXPECT_FLOAT_EQ(png.confidence(), raw.confidence()) << "image " << i;

    // 56x56 RGB (each pixel doubled, grey r = g = b): resized and made luma.
    std::vector<uint8_t> big(56 * 56 * 3);
    for (int y = 0; y < 56; ++y) {
      for (int x = 0; x < 56; ++x) {
        for (int c = 0; c < 3; ++c) big[(y * 56 + x) * 3 + c] = f.image(i)[(y / 2) * 28 + x / 2];
      }
    }
    v1::ClassifyRequest big_req;
    big_req.mutable_image()->set_encoded(EncodePng(big.data(), 56, 56, 3));
    ASSERT_OK(ToAbsl(Classify(server.stub(), big_req, &rgb)));
    EXPECT_GE(rgb.label(), 0);
    EXPECT_LT(rgb.label(), 10);
    EXPECT_GE(rgb.exits_evaluated(), 1);
    if (rgb.label() == raw.label()) ++resized_agree;

    v1::ClassifyRequest float_req;
    float_req.mutable_image()->set_raw_float32(FloatBytes(f.Pixels(i)));
    ASSERT_OK(ToAbsl(Classify(server.stub(), float_req, &floats)));
    EXPECT_EQ(floats.label(), raw.label()) << "image " << i;
    EXPECT_EQ(floats.exit().exit_index(), raw.exit().exit_index()) << "image " << i;
  }
  // The resized image is a slightly blurred copy: mostly the same answers.
  EXPECT_GE(resized_agree, kN * 7 / 10);
}

TEST(ClassifyTest, RawFloat32OfAnotherSizeIsResized) {
  const ServerFixture& f = Fixture();
  TestServer server;
  std::vector<float> big(56 * 56);
  for (int y = 0; y < 56; ++y) {
    for (int x = 0; x < 56; ++x) big[y * 56 + x] = f.image(0)[(y / 2) * 28 + x / 2] / 255.0f;
  }
  v1::ClassifyRequest req;
  req.mutable_image()->set_raw_float32(FloatBytes(big));
  req.mutable_image()->set_height(56);
  req.mutable_image()->set_width(56);
  v1::ClassifyResponse r;
  ASSERT_OK(ToAbsl(Classify(server.stub(), req, &r)));
  EXPECT_GE(r.exits_evaluated(), 1);
}

TEST(ClassifyProgressiveTest, StreamsEveryExitInOrderEndingWithTheAnswer) {
  const ServerFixture& f = Fixture();
  TestServer server;
  int multi = 0;
  for (int i = 0; i < 20; ++i) {
    v1::ClassifyResponse unary;
    ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(i)), &unary)));

    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = server.stub().ClassifyProgressive(&ctx, RawRequest(f.image(i)));
    std::vector<v1::ClassifyResponse> messages;
    v1::ClassifyResponse m;
    while (reader->Read(&m)) messages.push_back(m);
    ASSERT_OK(ToAbsl(reader->Finish()));
    ASSERT_FALSE(messages.empty());
    ASSERT_EQ(static_cast<int>(messages.size()), unary.exits_evaluated()) << "image " << i;
    const v1::VariantManifest v = f.Variant("v1");
    for (size_t k = 0; k < messages.size(); ++k) {
      const v1::ClassifyResponse& msg = messages[k];
      EXPECT_EQ(msg.exit().depth(), static_cast<int>(k) + 1) << "image " << i;
      EXPECT_EQ(msg.exits_evaluated(), static_cast<int>(k) + 1) << "image " << i;
      const int want_exit = static_cast<int>(k) < v.enabled_exits_size()
                                ? v.enabled_exits(k)
                                : f.model->manifest().exits_size() - 1;
      EXPECT_EQ(msg.exit().exit_index(), want_exit) << "image " << i << " message " << k;
      if (k > 0) {
        EXPECT_GT(msg.exit().exit_index(), messages[k - 1].exit().exit_index());
      }
      EXPECT_EQ(msg.final(), k + 1 == messages.size()) << "image " << i << " message " << k;
      EXPECT_EQ(msg.variant(), "v1");
      // Every step matches the executor's step at that depth.
      const SampleResult& want = Expected("v1", i);
      ASSERT_LT(k, want.steps.size());
      EXPECT_EQ(msg.exit().label(), want.steps[k].label);
      EXPECT_NEAR(msg.exit().confidence(), want.steps[k].confidence, 1e-6);
    }
    const v1::ClassifyResponse& last = messages.back();
    EXPECT_EQ(last.label(), unary.label());
    EXPECT_EQ(last.exit().exit_index(), unary.exit().exit_index());
    EXPECT_EQ(last.exits_evaluated(), unary.exits_evaluated());
    EXPECT_EQ(last.class_name(), unary.class_name());
    EXPECT_FLOAT_EQ(last.confidence(), unary.confidence());
    EXPECT_GT(last.server_latency_s(), 0);
    if (messages.size() > 1) ++multi;
  }
  EXPECT_GT(multi, 0) << "no image went past its first exit";
}

TEST(ClassifyProgressiveTest, BadImageFailsTheCall) {
  TestServer server;
  grpc::ClientContext ctx;
  v1::ClassifyRequest req;
  req.mutable_image()->set_encoded("");
  auto reader = server.stub().ClassifyProgressive(&ctx, req);
  v1::ClassifyResponse m;
  EXPECT_FALSE(reader->Read(&m));
  EXPECT_THAT(ToAbsl(reader->Finish()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ClassifyStreamTest, AnswersEveryItemAndSurvivesABadOne) {
  const ServerFixture& f = Fixture();
  TestServer server;
  constexpr int kN = 100;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = server.stub().ClassifyStream(&ctx);
  std::map<std::string, v1::ClassifyResponse> responses;
  std::thread reader([&] {
    v1::ClassifyResponse r;
    while (stream->Read(&r)) responses[r.request_id()] = r;
  });
  for (int i = 0; i < kN; ++i) {
    if (i == kN / 2) {
      v1::ClassifyRequest bad;
      bad.set_request_id("bad");
      bad.mutable_image()->set_encoded("");
      ASSERT_TRUE(stream->Write(bad));
    }
    ASSERT_TRUE(stream->Write(RawRequest(f.image(i % f.num_images), absl::StrCat("s", i))));
  }
  ASSERT_TRUE(stream->WritesDone());
  reader.join();
  ASSERT_OK(ToAbsl(stream->Finish()));
  ASSERT_EQ(responses.size(), static_cast<size_t>(kN + 1));
  for (int i = 0; i < kN; ++i) {
    auto it = responses.find(absl::StrCat("s", i));
    ASSERT_NE(it, responses.end()) << "no answer for s" << i;
    EXPECT_EQ(it->second.error_code(), 0) << it->second.error();
    ExpectSameAnswer(it->second, Expected("v1", i % f.num_images), absl::StrCat("s", i));
    EXPECT_EQ(it->second.variant(), "v1");
  }
  const v1::ClassifyResponse& bad = responses["bad"];
  EXPECT_EQ(bad.error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(bad.error(), HasSubstr("empty image"));
}

TEST(ClassifyStreamTest, EmptyStreamFinishesOk) {
  TestServer server;
  grpc::ClientContext ctx;
  auto stream = server.stub().ClassifyStream(&ctx);
  ASSERT_TRUE(stream->WritesDone());
  v1::ClassifyResponse r;
  EXPECT_FALSE(stream->Read(&r));
  EXPECT_OK(ToAbsl(stream->Finish()));
}

TEST(CancellationTest, ClientsGoingAwayLeaveTheServerHealthy) {
  const ServerFixture& f = Fixture();
  TestServer server;
  for (int round = 0; round < 10; ++round) {
    {
      grpc::ClientContext ctx;
      auto reader = server.stub().ClassifyProgressive(&ctx, RawRequest(f.image(round)));
      if (round % 2 == 1) {
        v1::ClassifyResponse m;
        reader->Read(&m);
      }
      ctx.TryCancel();
      v1::ClassifyResponse m;
      while (reader->Read(&m)) {
      }
      grpc::Status st = reader->Finish();
      EXPECT_TRUE(st.ok() || st.error_code() == grpc::StatusCode::CANCELLED) << st.error_message();
    }
    {
      grpc::ClientContext ctx;
      auto stream = server.stub().ClassifyStream(&ctx);
      for (int i = 0; i < 30; ++i) {
        if (!stream->Write(RawRequest(f.image(i), absl::StrCat(i)))) break;
      }
      if (round % 2 == 1) {
        v1::ClassifyResponse m;
        stream->Read(&m);
      }
      ctx.TryCancel();
      v1::ClassifyResponse m;
      while (stream->Read(&m)) {
      }
      EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
    }
  }
  // Everything the cancelled calls queued is worked off and the server
  // answers as before.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  std::optional<double> pending;
  while (absl::Now() < give_up) {
    pending.reset();
    for (const auto& family : server.registry().Collect()) {
      if (family.name == "hapi_pending_requests" && !family.metric.empty()) {
        pending = family.metric[0].gauge.value;
      }
    }
    if (pending == 0) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(pending.has_value()) << "no hapi_pending_requests gauge";
  EXPECT_EQ(*pending, 0) << "requests of cancelled calls still pending after 30 s";
  v1::ClassifyResponse r;
  ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(3)), &r)));
  ExpectSameAnswer(r, Expected("v1", 3), "after cancellations");
}

TEST(ServingStatusTest, DescribesTheVariant) {
  const ServerFixture& f = Fixture();
  TestServer server;
  v1::ClassifyResponse r;
  for (int i = 0; i < 10; ++i)
    ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(i)), &r)));
  grpc::ClientContext ctx;
  v1::ServingStatus status;
  ASSERT_OK(ToAbsl(server.stub().GetServingStatus(&ctx, v1::ServingStatusRequest(), &status)));
  const v1::VariantManifest v = f.Variant("v1");
  EXPECT_EQ(status.variant(), "v1");
  EXPECT_EQ(status.model(), kModelName);
  EXPECT_EQ(status.device(), "dev");
  EXPECT_THAT(status.enabled_exits(), ElementsAreArray(v.enabled_exits()));
  EXPECT_THAT(status.thresholds(), Pointwise(FloatEq(), v.thresholds()));
  EXPECT_EQ(status.exit_policy(), "max_softmax");
  EXPECT_THAT(status.sla(), HasSubstr("latency_budget_ms: 5"));
  EXPECT_DOUBLE_EQ(status.predicted_accuracy(), 0.8);
  EXPECT_DOUBLE_EQ(status.predicted_mean_ms(), 1.5);
  EXPECT_EQ(status.requests(), 10);
  EXPECT_EQ(status.variant_swaps(), 1);
  EXPECT_GT(status.uptime_s(), 0);
  EXPECT_FALSE(status.loaded_at().empty());
  ASSERT_EQ(status.exit_counts_size(), f.model->manifest().exits_size());
  int64_t answered = 0;
  for (int64_t c : status.exit_counts()) answered += c;
  EXPECT_EQ(answered, 10);
}

// A variant runs in the precision it was planned for: the loader is asked
// for int8 when the variant says so, unless the server overrides it, and
// the status and metrics say which precision is served.
TEST(PrecisionTest, ServesTheVariantsPrecisionUnlessOverridden) {
  const ServerFixture& f = Fixture();
  const RepositoryLayout layout(f.repository);
  v1::VariantManifest v = f.Variant("v1");
  v.set_id("v1-int8");
  v.set_precision(v1::INT8);
  ASSERT_OK(MakeDirectories(layout.VariantDir(v.id())));
  ASSERT_OK(WriteTextProtoAtomically(layout.VariantManifest(v.id()), v));
  // Records what each load asked for; the fixture model itself loads in
  // fp32 (it has no int8 ranges).
  auto asked = std::make_shared<std::vector<bool>>();
  auto mu = std::make_shared<absl::Mutex>();
  ModelLoader recording = [f_load = f.load_model, asked, mu](const std::string& dir,
                                                             const ModelOptions& options) {
    {
      absl::MutexLock lock(mu.get());
      asked->push_back(options.int8);
    }
    ModelOptions fp32 = options;
    fp32.int8 = false;
    return f_load(dir, fp32);
  };
  auto last_asked = [&] {
    absl::MutexLock lock(mu.get());
    return asked->empty() ? std::optional<bool>() : std::optional<bool>(asked->back());
  };
  ServableOptions o;
  o.repository = f.repository;
  o.load_model = recording;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> int8, Servable::Load(o, "v1-int8", nullptr));
  EXPECT_EQ(int8->precision(), v1::INT8);
  EXPECT_EQ(last_asked(), std::optional<bool>(true));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Servable> fp32, Servable::Load(o, "v1", nullptr));
  EXPECT_EQ(fp32->precision(), v1::FP32);
  EXPECT_EQ(last_asked(), std::optional<bool>(false));
  // The device has no int8 latencies: deadlines fall back to fp32's.
  EXPECT_DOUBLE_EQ(int8->SecondsBetweenDepths(0, 1), fp32->SecondsBetweenDepths(0, 1));
  o.precision = v1::FP32;
  ASSERT_OK_AND_ASSIGN(int8, Servable::Load(o, "v1-int8", nullptr));
  EXPECT_EQ(int8->precision(), v1::FP32);
  EXPECT_EQ(last_asked(), std::optional<bool>(false));
  o.precision = v1::INT8;
  ASSERT_OK_AND_ASSIGN(fp32, Servable::Load(o, "v1", nullptr));
  EXPECT_EQ(fp32->precision(), v1::INT8);
  EXPECT_EQ(last_asked(), std::optional<bool>(true));

  TestServerOptions options;
  options.variant = "v1-int8";
  options.load_model = recording;
  TestServer server(options);
  grpc::ClientContext ctx;
  v1::ServingStatus status;
  ASSERT_OK(ToAbsl(server.stub().GetServingStatus(&ctx, v1::ServingStatusRequest(), &status)));
  EXPECT_EQ(status.variant(), "v1-int8");
  EXPECT_EQ(status.precision(), "int8");
  bool info_found = false;
  for (const auto& family : server.registry().Collect()) {
    if (family.name != "hapi_variant_info") continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : metric.label) labels[l.name] = l.value;
      if (labels["variant"] == "v1-int8" && metric.gauge.value == 1) {
        EXPECT_EQ(labels["precision"], "int8");
        info_found = true;
      }
    }
  }
  EXPECT_TRUE(info_found);
}

// A deadline already past when the call starts. gRPC 1.51 does not fail such
// a call locally before sending it: it sends the smallest timeout it can
// encode, which the server turns into a deadline ~1 ms ahead, and a fast
// answer can then beat the client's own deadline timer. So this runs on the
// "deep" variant, whose first exit is predicted at ~10 ms: whoever notices
// first, the call must end DEADLINE_EXCEEDED.
TEST(DeadlineTest, ExpiredClientDeadline) {
  const ServerFixture& f = Fixture();
  TestServer server(WithVariant("deep"));
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() - std::chrono::microseconds(1));
    v1::ClassifyResponse r;
    EXPECT_THAT(ToAbsl(server.stub().Classify(&ctx, RawRequest(f.image(i)), &r)),
                StatusIs(absl::StatusCode::kDeadlineExceeded))
        << r.DebugString();

    grpc::ClientContext ctx2;
    ctx2.set_deadline(std::chrono::system_clock::now() - std::chrono::microseconds(1));
    auto reader = server.stub().ClassifyProgressive(&ctx2, RawRequest(f.image(i)));
    EXPECT_FALSE(reader->Read(&r)) << r.DebugString();
    EXPECT_THAT(ToAbsl(reader->Finish()), StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  // The server is still fine.
  v1::ClassifyResponse r;
  EXPECT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r, absl::InfiniteDuration())));
}

// Finds an image the "deep" variant (thresholds 1.0) answers at its final exit.
int DeepImage() {
  const ServerFixture& f = Fixture();
  for (int i = 0; i < f.num_images; ++i) {
    if (Expected("deep", i).exits_evaluated == 3) return i;
  }
  return -1;
}

TEST(DeadlineTest, TightDeadlineAnswersFromAnEarlyExit) {
  const ServerFixture& f = Fixture();
  const int i = DeepImage();
  ASSERT_GE(i, 0);
  TestServer server(WithVariant("deep"));
  v1::ClassifyResponse full;
  ASSERT_OK(
      ToAbsl(Classify(server.stub(), RawRequest(f.image(i)), &full, absl::InfiniteDuration())));
  EXPECT_EQ(full.exits_evaluated(), 3);
  EXPECT_FALSE(full.cut_by_deadline());
  EXPECT_EQ(full.exit().exit_index(), f.model->manifest().exits_size() - 1);

  // Exit 0 is predicted at ~10 ms, exit 2 five seconds later: a 1 s deadline
  // allows exit 0 only, and the server answers from it at once.
  v1::ClassifyResponse cut;
  const absl::Time start = absl::Now();
  ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(i)), &cut, absl::Seconds(1))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_TRUE(cut.cut_by_deadline());
  EXPECT_EQ(cut.exits_evaluated(), 1);
  EXPECT_EQ(cut.exit().exit_index(), 0);
  EXPECT_EQ(cut.exit().depth(), 1);
  ASSERT_FALSE(Expected("deep", i).steps.empty());
  EXPECT_EQ(cut.label(), Expected("deep", i).steps[0].label);
  EXPECT_EQ(cut.variant(), "deep");

  // Progressive: one step, then the answer from it.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  auto reader = server.stub().ClassifyProgressive(&ctx, RawRequest(f.image(i)));
  std::vector<v1::ClassifyResponse> messages;
  v1::ClassifyResponse m;
  while (reader->Read(&m)) messages.push_back(m);
  ASSERT_OK(ToAbsl(reader->Finish()));
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_TRUE(messages[0].final());
  EXPECT_TRUE(messages[0].cut_by_deadline());
  EXPECT_EQ(messages[0].exit().exit_index(), 0);
}

// The latency model predicts microseconds a stage; the stages take 100 ms. The
// executor keeps going (it trusts the prediction) and would overrun the call's
// deadline: the stream must close at the deadline with the best exit it has
// streamed, not end DEADLINE_EXCEEDED after streaming exits.
TEST(DeadlineTest, ProgressiveStreamOverrunningItsDeadlineClosesWithItsBestExit) {
  const ServerFixture& f = Fixture();
  int i = 0;
  while (i < f.num_images && Expected("v1", i).exits_evaluated != 3) ++i;
  ASSERT_LT(i, f.num_images) << "no image reaches the final exit under v1";
  TestServerOptions options = WithVariant("v1");
  options.load_model = FakeModelLoader(absl::Milliseconds(100));
  // A margin that a loaded test machine keeps, sanitizers included (the
  // server's default is 200 us).
  options.service.response_margin = absl::Milliseconds(100);
  TestServer server(options);
  // Exit 0 after 100 ms, exit 2 after 300 ms, the final exit after 600 ms;
  // the stream must close by 450 - 100 ms.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(450)));
  auto reader = server.stub().ClassifyProgressive(&ctx, RawRequest(f.image(i), "late"));
  std::vector<v1::ClassifyResponse> messages;
  v1::ClassifyResponse m;
  while (reader->Read(&m)) messages.push_back(m);
  ASSERT_OK(ToAbsl(reader->Finish()));
  ASSERT_FALSE(messages.empty());
  const v1::ClassifyResponse& last = messages.back();
  EXPECT_TRUE(last.final());
  EXPECT_TRUE(last.cut_by_deadline());
  EXPECT_EQ(last.request_id(), "late");
  EXPECT_NE(last.exit().exit_index(), f.model->manifest().exits_size() - 1);
  // Its answer is the most confident of the exits evaluated by then (exit 0,
  // and exit 2 unless the machine is slow), each of which was streamed.
  const std::vector<ExitStep>& steps = Expected("v1", i).steps;
  ASSERT_EQ(steps.size(), 3u);
  std::set<int> streamed;
  for (const v1::ClassifyResponse& r : messages) streamed.insert(r.exit().exit_index());
  ASSERT_TRUE(streamed.count(steps[0].exit_index));
  const ExitStep& best =
      streamed.count(steps[1].exit_index) && steps[1].score > steps[0].score ? steps[1] : steps[0];
  EXPECT_EQ(last.exit().exit_index(), best.exit_index);
  EXPECT_EQ(last.label(), best.label);
  EXPECT_FLOAT_EQ(last.confidence(), best.confidence);
  for (size_t k = 0; k + 1 < messages.size(); ++k) EXPECT_FALSE(messages[k].final());
}

TEST(DeadlineTest, NoTimeForTheFirstExitIsDeadlineExceeded) {
  const ServerFixture& f = Fixture();
  TestServer server(WithVariant("stuck"));
  v1::ClassifyResponse r;
  const absl::Time start = absl::Now();
  grpc::Status st = Classify(server.stub(), RawRequest(f.image(0)), &r, absl::Seconds(5));
  // The server's own answer (it predicts 100 s for stage 0), not the client
  // timing out.
  EXPECT_THAT(ToAbsl(st), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("first exit")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  // Without a deadline it is answered normally.
  ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r, absl::InfiniteDuration())));
  EXPECT_EQ(r.variant(), "stuck");
}

TEST(QueueTest, FullQueueIsResourceExhausted) {
  const ServerFixture& f = Fixture();
  TestServerOptions options;
  options.batcher.max_batch = 1;
  options.batcher.queue_capacity = 1;
  options.batcher.workers = 1;
  TestServer server(options);
  constexpr int kConcurrent = 100;
  int ok = 0, exhausted = 0, other = 0;
  std::string other_error;
  for (int round = 0; round < 5 && exhausted == 0; ++round) {
    std::vector<grpc::ClientContext> contexts(kConcurrent);
    std::vector<v1::ClassifyRequest> requests(kConcurrent);
    std::vector<v1::ClassifyResponse> responses(kConcurrent);
    std::vector<grpc::Status> statuses(kConcurrent);
    absl::BlockingCounter done(kConcurrent);
    for (int i = 0; i < kConcurrent; ++i) {
      requests[i] = RawRequest(f.image(i % f.num_images));
      contexts[i].set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      server.stub().async()->Classify(&contexts[i], &requests[i], &responses[i],
                                      [&, i](grpc::Status s) {
                                        statuses[i] = std::move(s);
                                        done.DecrementCount();
                                      });
    }
    done.Wait();
    for (int i = 0; i < kConcurrent; ++i) {
      switch (statuses[i].error_code()) {
        case grpc::StatusCode::OK:
          ++ok;
          ExpectSameAnswer(responses[i], Expected("v1", i % f.num_images), absl::StrCat("#", i));
          break;
        case grpc::StatusCode::RESOURCE_EXHAUSTED:
          ++exhausted;
          EXPECT_THAT(statuses[i].error_message(), HasSubstr("queue is full"));
          break;
        default:
          ++other;
          other_error = statuses[i].error_message();
      }
    }
  }
  EXPECT_GT(exhausted, 0);
  EXPECT_GT(ok, 0);
  EXPECT_EQ(other, 0) << other_error;
}

TEST(BatchingTest, BatchedAnswersMatchTheExecutor) {
  const ServerFixture& f = Fixture();
  TestServerOptions options;
  options.batcher.max_batch = 8;
  options.batcher.max_wait = absl::Milliseconds(50);
  options.batcher.workers = 1;
  TestServer server(options);
  constexpr int kN = 32;
  std::vector<grpc::ClientContext> contexts(kN);
  std::vector<v1::ClassifyRequest> requests(kN);
  std::vector<v1::ClassifyResponse> responses(kN);
  std::vector<grpc::Status> statuses(kN);
  absl::BlockingCounter done(kN);
  for (int i = 0; i < kN; ++i) {
    requests[i] = RawRequest(f.image(i));
    contexts[i].set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    server.stub().async()->Classify(&contexts[i], &requests[i], &responses[i],
                                    [&, i](grpc::Status s) {
                                      statuses[i] = std::move(s);
                                      done.DecrementCount();
                                    });
  }
  done.Wait();
  int largest = 0, differ = 0;
  for (int i = 0; i < kN; ++i) {
    ASSERT_OK(ToAbsl(statuses[i]));
    largest = std::max(largest, responses[i].batch_size());
    EXPECT_LE(responses[i].batch_size(), 8);
    const SampleResult& want = Expected("v1", i);
    // Batched convolutions may round differently: a sample sitting right at
    // a threshold may leave one exit later or earlier.
    if (responses[i].exit().exit_index() != want.exit_index) {
      ++differ;
      continue;
    }
    EXPECT_EQ(responses[i].label(), want.label) << i;
    EXPECT_NEAR(responses[i].confidence(), want.confidence, 1e-4) << i;
  }
  EXPECT_LE(differ, 1);
  EXPECT_GT(largest, 1) << "no batch formed from " << kN << " concurrent requests";
}

absl::Status LoadVariant(v1::Inference::Stub& stub, const std::string& id,
                         v1::LoadVariantResponse* response = nullptr,
                         const std::string& authorization = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  v1::LoadVariantRequest req;
  req.set_variant(id);
  v1::LoadVariantResponse ignored;
  return ToAbsl(stub.LoadVariant(&ctx, req, response ? response : &ignored));
}

v1::ServingStatus Status(v1::Inference::Stub& stub) {
  grpc::ClientContext ctx;
  v1::ServingStatus status;
  grpc::Status st = stub.GetServingStatus(&ctx, v1::ServingStatusRequest(), &status);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return status;
}

TEST(HotSwapTest, SwapsUnderLoadWithoutFailures) {
  const ServerFixture& f = Fixture();
  constexpr int kN = 40;
  int told_apart = 0;             // images v1 and v2 answer differently
  for (int i = 0; i < kN; ++i) {  // memoise before the clients start
    told_apart += Expected("v1", i).exit_index != Expected("v2", i).exit_index;
  }
  // Else an answer could match "the variant the response names" whichever
  // variant computed it.
  ASSERT_GE(told_apart, kN / 2);
  TestServerOptions options;
  options.batcher.workers = 2;
  TestServer server(options);
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, failed{0}, wrong{0};
  absl::Mutex mu;
  std::map<std::string, int> by_variant;
  std::string first_error;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      auto stub = v1::Inference::NewStub(server.NewChannel());
      for (int k = 0; !stop.load(); ++k) {
        const int i = (t * 11 + k) % kN;
        v1::ClassifyResponse r;
        grpc::Status st = Classify(*stub, RawRequest(f.image(i)), &r);
        ++sent;
        absl::MutexLock lock(&mu);
        if (!st.ok()) {
          ++failed;
          if (first_error.empty()) first_error = st.error_message();
          continue;
        }
        ++by_variant[r.variant()];
        // The answer is the one of the variant the response names.
        const SampleResult& want = Expected(r.variant(), i);
        if (r.label() != want.label || r.exit().exit_index() != want.exit_index ||
            r.exits_evaluated() != want.exits_evaluated) {
          ++wrong;
        }
      }
    });
  }
  auto wait_for_requests = [&](int n) {
    const int target = sent.load() + n;
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (sent.load() < target && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
  };
  wait_for_requests(20);
  std::vector<std::string> order;
  for (int swap = 0; swap < 5; ++swap) {
    const std::string id = swap % 2 == 0 ? "v2" : "v1";
    v1::LoadVariantResponse response;
    EXPECT_OK(LoadVariant(server.stub(), id, &response));
    EXPECT_EQ(response.status().variant(), id);
    order.push_back(id);
    wait_for_requests(20);
  }
  stop = true;
  for (std::thread& c : clients) c.join();
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(by_variant["v1"], 0);
  EXPECT_GT(by_variant["v2"], 0);
  EXPECT_EQ(by_variant.size(), 2u);

  // A failed load leaves the current variant serving.
  EXPECT_THAT(LoadVariant(server.stub(), "no-such-variant"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no-such-variant")));
  v1::ServingStatus status = Status(server.stub());
  EXPECT_EQ(status.variant(), "v2");
  EXPECT_EQ(status.variant_swaps(), 6);
  v1::ClassifyResponse r;
  ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r)));
  EXPECT_EQ(r.variant(), "v2");
}

TEST(HotSwapTest, BrokenVariantKeepsTheOldOneServing) {
  const ServerFixture& f = Fixture();
  // A variant naming a model that does not exist, and one with an exit the
  // model lacks.
  v1::VariantManifest missing_model = f.Variant("v1");
  missing_model.set_id("missing-model");
  missing_model.set_model("absent");
  for (const char* id : {"missing-model", "bad-exit", "garbled"}) {
    ASSERT_OK(MakeDirectories(absl::StrCat(f.repository, "/variants/", id)));
  }
  ASSERT_OK(WriteTextProtoAtomically(f.repository + "/variants/missing-model/variant.pbtxt",
                                     missing_model));
  v1::VariantManifest bad_exit = f.Variant("v1");
  bad_exit.set_id("bad-exit");
  bad_exit.set_enabled_exits(1, 40);
  ASSERT_OK(WriteTextProtoAtomically(f.repository + "/variants/bad-exit/variant.pbtxt", bad_exit));
  ASSERT_OK(WriteFileAtomically(f.repository + "/variants/garbled/variant.pbtxt", "id: ["));

  TestServer server;
  EXPECT_THAT(LoadVariant(server.stub(), "missing-model"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("absent")));
  EXPECT_THAT(LoadVariant(server.stub(), "bad-exit"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad-exit")));
  // The file at fault is named inside the repository; where the server keeps
  // the repository on disk is not the client's business.
  EXPECT_THAT(
      LoadVariant(server.stub(), "garbled"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("variants/garbled/variant.pbtxt"), Not(HasSubstr(f.repository)))));
  for (const char* id : {"missing-model", "bad-exit"}) {
    EXPECT_THAT(LoadVariant(server.stub(), id),
                StatusIs(::testing::_, Not(HasSubstr(f.repository))))
        << id;
  }
  v1::ServingStatus status = Status(server.stub());
  EXPECT_EQ(status.variant(), "v1");
  EXPECT_EQ(status.variant_swaps(), 1);
  v1::ClassifyResponse r;
  ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r)));
  EXPECT_EQ(r.variant(), "v1");
}

// Regression: a variant's manifest id must match its directory. A copied
// directory ("alias" holding id "v1") would otherwise be served as "v1", and
// hapi-server --device would see NewestVariantForDevice() == "alias" != "v1"
// on every poll and reload it forever.
TEST(HotSwapTest, VariantIdMustMatchItsDirectory) {
  const ServerFixture& f = Fixture();
  ASSERT_OK(MakeDirectories(f.repository + "/variants/alias"));
  ASSERT_OK(
      WriteTextProtoAtomically(f.repository + "/variants/alias/variant.pbtxt", f.Variant("v1")));
  TestServer server;
  EXPECT_THAT(server.servables().Load("alias"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("alias"), HasSubstr("must match its directory"))));
  EXPECT_THAT(LoadVariant(server.stub(), "alias"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must match its directory")));
  EXPECT_EQ(Status(server.stub()).variant(), "v1");
}

TEST(LoadVariantTest, AdminToken) {
  TestServerOptions options;
  options.service.admin_token = "s3cret";
  TestServer server(options);
  EXPECT_THAT(LoadVariant(server.stub(), "v2"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(LoadVariant(server.stub(), "v2", nullptr, "Bearer wrong"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(LoadVariant(server.stub(), "v2", nullptr, "s3cret"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(Status(server.stub()).variant(), "v1");
  v1::LoadVariantResponse response;
  EXPECT_OK(LoadVariant(server.stub(), "v2", &response, "Bearer s3cret"));
  EXPECT_EQ(response.status().variant(), "v2");
  EXPECT_EQ(Status(server.stub()).variant(), "v2");
}

TEST(HealthTest, UnavailableUntilAVariantIsLoaded) {
  const ServerFixture& f = Fixture();
  TestServer server(WithVariant(""));
  v1::ClassifyResponse r;
  EXPECT_THAT(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no variant")));
  {
    grpc::ClientContext ctx;
    auto reader = server.stub().ClassifyProgressive(&ctx, RawRequest(f.image(0)));
    EXPECT_FALSE(reader->Read(&r));
    EXPECT_THAT(ToAbsl(reader->Finish()), StatusIs(absl::StatusCode::kUnavailable));
  }
  {
    grpc::ClientContext ctx;
    auto stream = server.stub().ClassifyStream(&ctx);
    ASSERT_TRUE(stream->Write(RawRequest(f.image(0), "x")));
    ASSERT_TRUE(stream->WritesDone());
    ASSERT_TRUE(stream->Read(&r));
    EXPECT_EQ(r.request_id(), "x");
    EXPECT_EQ(r.error_code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
    EXPECT_OK(ToAbsl(stream->Finish()));
  }
  v1::ServingStatus status = Status(server.stub());
  EXPECT_EQ(status.variant(), "");
  EXPECT_EQ(status.variant_swaps(), 0);

  ASSERT_OK(LoadVariant(server.stub(), "v1"));
  ASSERT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r)));
  EXPECT_EQ(r.variant(), "v1");
}

// --- Bad input -------------------------------------------------------------

class BadInputTest : public ::testing::Test {
 protected:
  absl::Status Send(const v1::Image& image) {
    v1::ClassifyRequest req;
    *req.mutable_image() = image;
    v1::ClassifyResponse r;
    return ToAbsl(Classify(server_.stub(), req, &r));
  }
  TestServer server_;
};

TEST_F(BadInputTest, EmptyEncodedBytes) {
  v1::Image image;
  image.set_encoded("");
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST_F(BadInputTest, UndecodableBytes) {
  v1::Image image;
  image.set_encoded("this is not a PNG, nor a JPEG");
  EXPECT_THAT(Send(image),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot decode")));
}

TEST_F(BadInputTest, RawUint8OfTheWrongLength) {
  v1::Image image;
  image.set_raw_uint8(std::string(100, '\x10'));
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected")));
  image.set_raw_uint8("");
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  image.set_raw_uint8(std::string(100, '\x10'));
  image.set_height(10);
  image.set_width(10);
  EXPECT_OK(Send(image));  // 10x10 is resized
  image.set_height(5000);
  image.set_width(2);
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("within")));
  image.set_height(-10);
  image.set_width(-10);
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("within")));
}

TEST_F(BadInputTest, RawFloat32NotANumber) {
  std::vector<float> values(784, 0.5f);
  values[17] = std::numeric_limits<float>::quiet_NaN();
  v1::Image image;
  image.set_raw_float32(FloatBytes(values));
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a number")));
  values[17] = std::numeric_limits<float>::infinity();
  image.set_raw_float32(FloatBytes(values));
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a number")));
  values[17] = 1.5f;
  image.set_raw_float32(FloatBytes(values));
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index 17")));
  image.set_raw_float32(std::string(783 * 4, '\0'));
  EXPECT_THAT(Send(image), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected")));
}

TEST_F(BadInputTest, NoImage) {
  EXPECT_THAT(Send(v1::Image()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no image")));
}

TEST(BadInputSizeTest, OversizedMessageIsRefusedByGrpc) {
  const ServerFixture& f = Fixture();
  TestServerOptions options;
  options.max_receive_bytes = 64 * 1024;
  TestServer server(options);
  v1::ClassifyRequest req;
  req.mutable_image()->set_encoded(std::string(100 * 1024, 'x'));
  v1::ClassifyResponse r;
  EXPECT_THAT(ToAbsl(Classify(server.stub(), req, &r)),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // The server is fine afterwards.
  EXPECT_OK(ToAbsl(Classify(server.stub(), RawRequest(f.image(0)), &r)));
}

TEST(BadInputVariantTest, UnknownAndMalformedVariantNames) {
  TestServer server;
  EXPECT_THAT(LoadVariant(server.stub(), "nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(LoadVariant(server.stub(), "../x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("variant id")));
  EXPECT_THAT(LoadVariant(server.stub(), ""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LoadVariant(server.stub(), "V1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(Status(server.stub()).variant(), "v1");
}

// --- Input spec ------------------------------------------------------------

// The fixture's fake model, made to eat 3x32x32 RGB, centre-cropped.
ModelLoader RgbFakeLoader() {
  return [](const std::string& model_dir,
            const ModelOptions&) -> absl::StatusOr<std::shared_ptr<const Model>> {
    v1::ModelManifest manifest;
    HAPI_RETURN_IF_ERROR(ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &manifest));
    *manifest.mutable_input() = MakeInputSpec(3, 32, 32, 0.5f, 0.25f);
    manifest.mutable_input()->set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
    for (v1::StageInfo& stage : *manifest.mutable_stages()) {
      *stage.mutable_output() = InputShape(manifest.input());
    }
    return MakeFakeModel(manifest);
  };
}

class RgbModelTest : public ::testing::Test {
 protected:
  static TestServerOptions Options() {
    TestServerOptions options;
    options.load_model = RgbFakeLoader();
    return options;
  }
  // What the executor answers for `pixels` (one 3x32x32 sample) under v1.
  SampleResult Expected(const std::vector<float>& pixels) {
    absl::StatusOr<std::shared_ptr<const Model>> model =
        RgbFakeLoader()(absl::StrCat(Fixture().repository, "/models/", kModelName), {});
    EXPECT_OK(model.status());
    auto executor = EarlyExitExecutor::Create(*model, DesignOf(Fixture().Variant("v1")));
    EXPECT_OK(executor.status());
    absl::StatusOr<std::vector<SampleResult>> results = (*executor)->Run(pixels.data(), 1);
    EXPECT_OK(results.status());
    return results->at(0);
  }
  TestServer server_{Options()};
};

TEST_F(RgbModelTest, ServingStatusReportsTheInputSpec) {
  const v1::InputSpec input = Status(server_.stub()).input();
  EXPECT_EQ(ShapeString(input), "3x32x32");
  EXPECT_EQ(input.resize(), v1::InputSpec::RESIZE_CENTER_CROP);
  EXPECT_EQ(input.layout(), "NCHW");
  TestServer gray;
  EXPECT_EQ(ShapeString(Status(gray.stub()).input()), "1x28x28");
}

TEST_F(RgbModelTest, ClassifiesThreeChannelRawTensorsAndImages) {
  for (int level : {30, 100, 200}) {
    SCOPED_TRACE(level);
    std::string bytes(3 * 32 * 32, static_cast<char>(level));
    for (int i = 0; i < 1024; ++i) bytes[2048 + i] = static_cast<char>(255 - level);
    v1::ClassifyRequest req;
    req.mutable_image()->set_raw_uint8(bytes);
    req.mutable_image()->set_channels(3);
    req.mutable_image()->set_height(32);
    req.mutable_image()->set_width(32);
    v1::ClassifyResponse r;
    ASSERT_OK(ToAbsl(Classify(server_.stub(), req, &r)));
    std::vector<float> pixels(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) pixels[i] = static_cast<uint8_t>(bytes[i]) / 255.0f;
    ExpectSameAnswer(r, Expected(pixels), "raw");
    // A grey PNG of another size: resized, cropped, replicated.
    const std::vector<uint8_t> grey(40 * 20, static_cast<uint8_t>(level));
    req.mutable_image()->set_encoded(EncodePng(grey.data(), 40, 20, 1));
    ASSERT_OK(ToAbsl(Classify(server_.stub(), req, &r)));
    ExpectSameAnswer(r, Expected(std::vector<float>(3 * 32 * 32, level / 255.0f)), "png");
  }
}

TEST_F(RgbModelTest, RawTensorsOfTheWrongShapeAreInvalidArguments) {
  const ServerFixture& f = Fixture();
  v1::ClassifyResponse r;
  // The grayscale model's 1x28x28 tensor, its shape given or left to the
  // model's.
  v1::ClassifyRequest gray_request = RawRequest(f.image(0));
  EXPECT_THAT(ToAbsl(Classify(server_.stub(), gray_request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1x32x32"), HasSubstr("3x32x32"))));
  gray_request.mutable_image()->set_height(28);
  gray_request.mutable_image()->set_width(28);
  EXPECT_THAT(ToAbsl(Classify(server_.stub(), gray_request, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1x28x28"), HasSubstr("3x32x32"))));
  // Three channels declared, one channel's bytes.
  v1::ClassifyRequest req;
  req.mutable_image()->set_raw_uint8(std::string(32 * 32, '\x40'));
  req.mutable_image()->set_channels(3);
  EXPECT_THAT(ToAbsl(Classify(server_.stub(), req, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 3x32x32")));
  // And a 3-channel tensor for the grayscale model.
  TestServer gray;
  req.mutable_image()->set_raw_uint8(std::string(3 * 28 * 28, '\x40'));
  EXPECT_THAT(ToAbsl(Classify(gray.stub(), req, &r)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("3x28x28"), HasSubstr("1x28x28"))));
}

// Several models side by side (docs/multi-model.md): the fixture's "tiny"
// (1x28x28, 10 classes, variants v1 v2 on device dev) and a second fake,
// "pair" (3x16x16, 4 classes, variants w1 w2 on its own device pair-dev: a
// device profile is one model's), written into the fixture's repository.
constexpr char kPairModel[] = "pair";

void WriteOrDie(const std::string& dir, const std::string& file,
                const google::protobuf::Message& m) {
  absl::Status st = MakeDirectories(dir);
  if (st.ok()) st = WriteTextProtoAtomically(absl::StrCat(dir, "/", file), m);
  ASSERT_OK(st);
}

// Writes "pair", its device and its variants once; "tiny-late" is tiny's
// newest variant (any device).
void AddPairModel() {
  static absl::Mutex mu;
  static bool done = false;
  absl::MutexLock lock(&mu);
  if (done) return;
  const RepositoryLayout layout(Fixture().repository);
  FakeModelSpec spec;
  spec.name = kPairModel;
  spec.num_classes = 4;
  spec.channels = 3;
  spec.height = spec.width = 16;
  const v1::ModelManifest manifest = FakeModelManifest(spec);
  WriteOrDie(layout.ModelDir(kPairModel), kManifestFile, manifest);
  absl::StatusOr<v1::DeviceProfile> profile = MakeAnalyticProfile("pair-dev", manifest, 1e9, 1e-6);
  ASSERT_OK(profile.status());
  WriteOrDie(layout.DeviceDir("pair-dev"), kProfileFile, *profile);
  for (const auto& [id, exits] :
       std::vector<std::pair<std::string, std::vector<int>>>{{"w1", {0, 2}}, {"w2", {1, 3}}}) {
    v1::VariantManifest v = Fixture().Variant("v1");
    v.set_id(id);
    v.set_model(kPairModel);
    v.set_device("pair-dev");
    v.clear_enabled_exits();
    v.clear_thresholds();
    for (int e : exits) {
      v.add_enabled_exits(e);
      v.add_thresholds(0.5f);
    }
    v.set_created_at(id == "w2" ? "2024-02-01T00:00:00Z" : "2024-01-01T00:00:00Z");
    WriteOrDie(layout.VariantDir(id), kVariantFile, v);
  }
  v1::VariantManifest late = Fixture().Variant("v1");
  late.set_id("tiny-late");
  late.set_created_at("2025-01-01T00:00:00Z");
  WriteOrDie(layout.VariantDir("tiny-late"), kVariantFile, late);
  done = true;
}

std::unique_ptr<InferenceServer> StartServer(InferenceServerOptions o) {
  AddPairModel();
  o.listen = "127.0.0.1:0";
  o.servables = Fixture().Servables();
  o.metrics_address = "";
  auto server = InferenceServer::Start(std::move(o));
  EXPECT_OK(server.status());
  return server.ok() ? *std::move(server) : nullptr;
}

std::unique_ptr<InferenceServer> StartTwoModels() {
  InferenceServerOptions o;
  o.variants = {"v1", "w1"};
  return StartServer(std::move(o));
}

v1::ClassifyRequest PairRequest(int level, const std::string& model = kPairModel) {
  v1::ClassifyRequest r;
  r.mutable_image()->set_raw_uint8(std::string(3 * 16 * 16, static_cast<char>(level)));
  r.mutable_image()->set_channels(3);
  r.mutable_image()->set_height(16);
  r.mutable_image()->set_width(16);
  r.set_model(model);
  return r;
}

v1::ClassifyRequest TinyRequest(int i, const std::string& model = kModelName) {
  v1::ClassifyRequest r = RawRequest(Fixture().image(i));
  r.set_model(model);
  return r;
}

std::unique_ptr<v1::Inference::Stub> StubFor(const InferenceServer& server) {
  return v1::Inference::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.port()),
                                                    grpc::InsecureChannelCredentials()));
}

absl::StatusOr<v1::ServingStatus> StatusOf(v1::Inference::Stub& stub, const std::string& model) {
  grpc::ClientContext ctx;
  v1::ServingStatusRequest req;
  req.set_model(model);
  v1::ServingStatus status;
  HAPI_RETURN_IF_ERROR(ToAbsl(stub.GetServingStatus(&ctx, req, &status)));
  return status;
}

TEST(MultiModelTest, RequestsGoToTheModelTheyName) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  auto stub = StubFor(*server);
  for (int i = 0; i < 5; ++i) {
    v1::ClassifyResponse r;
    ASSERT_OK(ToAbsl(Classify(*stub, TinyRequest(i), &r)));
    EXPECT_EQ(r.variant(), "v1");
    ExpectSameAnswer(r, Expected("v1", i), "tiny");
  }
  for (int level : {10, 120, 250}) {
    v1::ClassifyResponse r;
    ASSERT_OK(ToAbsl(Classify(*stub, PairRequest(level), &r)));
    EXPECT_EQ(r.variant(), "w1");
    EXPECT_GE(r.label(), 0);
    EXPECT_LT(r.label(), 4);
  }
  // Each model takes its own input only.
  v1::ClassifyResponse r;
  EXPECT_THAT(ToAbsl(Classify(*stub, TinyRequest(0, kPairModel), &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3x16x16")));
  EXPECT_THAT(ToAbsl(Classify(*stub, PairRequest(10, kModelName), &r)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1x28x28")));
}

TEST(MultiModelTest, StreamsNameTheModelPerMessage) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  auto stub = StubFor(*server);
  grpc::ClientContext ctx;
  auto stream = stub->ClassifyStream(&ctx);
  v1::ClassifyRequest tiny = TinyRequest(0), pair = PairRequest(50), unnamed = TinyRequest(0, "");
  tiny.set_request_id("tiny");
  pair.set_request_id("pair");
  unnamed.set_request_id("unnamed");
  for (const auto* req : {&tiny, &pair, &unnamed}) ASSERT_TRUE(stream->Write(*req));
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, v1::ClassifyResponse> got;
  v1::ClassifyResponse r;
  while (stream->Read(&r)) got[r.request_id()] = r;
  EXPECT_OK(ToAbsl(stream->Finish()));
  EXPECT_EQ(got["tiny"].variant(), "v1");
  EXPECT_EQ(got["pair"].variant(), "w1");
  EXPECT_EQ(got["unnamed"].error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  grpc::ClientContext progressive_ctx;
  auto reader = stub->ClassifyProgressive(&progressive_ctx, pair);
  int steps = 0;
  while (reader->Read(&r)) {
    EXPECT_EQ(r.variant(), "w1");
    ++steps;
  }
  EXPECT_OK(ToAbsl(reader->Finish()));
  EXPECT_GE(steps, 1);
}

TEST(MultiModelTest, EmptyNameOnlyWithOneModelAndUnknownIsNotFound) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  auto stub = StubFor(*server);
  v1::ClassifyResponse r;
  EXPECT_THAT(ToAbsl(Classify(*stub, TinyRequest(0, ""), &r)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'tiny'"), HasSubstr("'pair'"))));
  EXPECT_THAT(ToAbsl(Classify(*stub, TinyRequest(0, "nope"), &r)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(StatusOf(*stub, "nope"), StatusIs(absl::StatusCode::kNotFound));
  // One model: the name may be left out, or given.
  TestServer single;
  ASSERT_OK(ToAbsl(Classify(single.stub(), TinyRequest(0, ""), &r)));
  ASSERT_OK(ToAbsl(Classify(single.stub(), TinyRequest(0), &r)));
  EXPECT_THAT(ToAbsl(Classify(single.stub(), TinyRequest(0, kPairModel), &r)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'tiny'")));
  InferenceServerOptions o;
  o.variants = {"w1"};
  auto pair_only = StartServer(std::move(o));
  ASSERT_NE(pair_only, nullptr);
  ASSERT_OK(ToAbsl(Classify(*StubFor(*pair_only), PairRequest(30, ""), &r)));
  EXPECT_EQ(r.variant(), "w1");
}

TEST(MultiModelTest, ServingStatusPerModelOrAll) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  auto stub = StubFor(*server);
  absl::StatusOr<v1::ServingStatus> all = StatusOf(*stub, "");
  ASSERT_OK(all.status());
  ASSERT_EQ(all->models_size(), 2);
  EXPECT_EQ(all->models(0).model(), kModelName);
  EXPECT_EQ(all->models(0).variant(), "v1");
  EXPECT_EQ(all->models(1).model(), kPairModel);
  EXPECT_EQ(all->models(1).variant(), "w1");
  absl::StatusOr<v1::ServingStatus> pair = StatusOf(*stub, kPairModel);
  ASSERT_OK(pair.status());
  EXPECT_EQ(pair->variant(), "w1");
  EXPECT_EQ(ShapeString(pair->input()), "3x16x16");
  EXPECT_EQ(pair->models_size(), 0);
}

TEST(MultiModelTest, LoadVariantSwapsOnlyItsModel) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  auto stub = StubFor(*server);
  v1::LoadVariantResponse response;
  ASSERT_OK(LoadVariant(*stub, "w2", &response));
  EXPECT_EQ(response.status().variant(), "w2");
  EXPECT_EQ(response.status().model(), kPairModel);
  EXPECT_EQ(StatusOf(*stub, kModelName)->variant(), "v1");
  EXPECT_EQ(StatusOf(*stub, kModelName)->variant_swaps(), 1);
  EXPECT_EQ(StatusOf(*stub, kPairModel)->variant_swaps(), 2);
  grpc::ClientContext ctx;
  v1::LoadVariantRequest req;
  req.set_variant("v2");
  req.set_model(kPairModel);
  EXPECT_THAT(ToAbsl(stub->LoadVariant(&ctx, req, &response)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'tiny'")));
  EXPECT_THAT(LoadVariant(*stub, "no-such-variant"), StatusIs(absl::StatusCode::kNotFound));
  // A model the server was not started with is not added.
  InferenceServerOptions o;
  o.variants = {"w1"};
  auto pair_only = StartServer(std::move(o));
  ASSERT_NE(pair_only, nullptr);
  EXPECT_THAT(LoadVariant(*StubFor(*pair_only), "v1"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'tiny'")));
}

TEST(MultiModelTest, SwappingOneModelUnderLoadNeverDisturbsEither) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, tiny_answers{0}, pair_answers{0};
  auto load = [&](bool tiny) {
    auto stub = StubFor(*server);
    for (int i = 0; !stop.load(); ++i) {
      v1::ClassifyResponse r;
      const grpc::Status st =
          Classify(*stub, tiny ? TinyRequest(i % 20) : PairRequest(i % 256), &r);
      if (!st.ok() || (tiny && r.variant() != "v1")) ++failures;
      ++(tiny ? tiny_answers : pair_answers);
    }
  };
  std::vector<std::thread> clients;
  for (int t = 0; t < 2; ++t) clients.emplace_back(load, t == 0);
  for (int swap = 0; swap < 50; ++swap) {
    ASSERT_OK(server->models()
                  .FindExact(kPairModel)
                  .value()
                  ->servables()
                  .Load(swap % 2 == 0 ? "w2" : "w1")
                  .status());
  }
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(tiny_answers.load(), 0);
  EXPECT_GT(pair_answers.load(), 0);
  EXPECT_EQ(server->models().FindExact(kModelName).value()->servables().swaps(), 1);
}

TEST(MultiModelTest, ReadyOnlyOnceEveryModelIsLoaded) {
  AddPairModel();
  ModelRegistry registry({kModelName, kPairModel}, BatcherOptions(), Fixture().Servables(),
                         LiveMonitorOptions(), nullptr);
  EXPECT_FALSE(registry.AllLoaded());
  ASSERT_OK(registry.FindExact(kModelName).value()->servables().Load("v1").status());
  EXPECT_FALSE(registry.AllLoaded());
  ASSERT_OK(registry.ForVariant("w2", "").value()->servables().Load("w2").status());
  EXPECT_TRUE(registry.AllLoaded());
  // One model that cannot load: the server does not start.
  InferenceServerOptions o;
  o.models = {kModelName, "nope"};
  EXPECT_THAT(InferenceServer::Start([&] {
                o.servables = Fixture().Servables();
                o.listen = "127.0.0.1:0";
                o.metrics_address = "";
                return o;
              }()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST(MultiModelTest, ModelsServeTheirNewestVariantsAndNeedOneVariantEach) {
  InferenceServerOptions o;
  o.models = {kModelName, kPairModel};
  auto server = StartServer(std::move(o));
  ASSERT_NE(server, nullptr);
  auto stub = StubFor(*server);
  EXPECT_EQ(StatusOf(*stub, kModelName)->variant(), "tiny-late");
  EXPECT_EQ(StatusOf(*stub, kPairModel)->variant(), "w2");
  // "*": the models with a variant (for the device when given).
  absl::StatusOr<std::vector<std::string>> on_pair_dev =
      ModelsWithVariantsForDevice(Fixture().repository, "pair-dev");
  ASSERT_OK(on_pair_dev.status());
  EXPECT_EQ(*on_pair_dev, std::vector<std::string>{kPairModel});
  InferenceServerOptions twice;
  twice.variants = {"v1", "v2"};
  twice.listen = "127.0.0.1:0";
  twice.servables = Fixture().Servables();
  twice.metrics_address = "";
  EXPECT_THAT(InferenceServer::Start(std::move(twice)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one variant per model")));
}

TEST(MultiModelTest, OipModelNameSelectsTheModel) {
  auto server = StartTwoModels();
  ASSERT_NE(server, nullptr);
  auto oip = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server->port()), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse ready;
    ASSERT_TRUE(oip->ServerReady(&ctx, inference::ServerReadyRequest(), &ready).ok());
    EXPECT_TRUE(ready.ready());
  }
  for (const char* name : {kModelName, kPairModel, "nope"}) {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest req;
    req.set_name(name);
    inference::ModelReadyResponse ready;
    ASSERT_TRUE(oip->ModelReady(&ctx, req, &ready).ok());
    EXPECT_EQ(ready.ready(), std::string(name) != "nope") << name;
  }
  inference::ModelInferRequest req;
  req.set_model_name(kPairModel);
  auto* input = req.add_inputs();
  input->set_name("image");
  input->set_datatype("UINT8");
  for (int64_t d : {1, 3, 16, 16}) input->add_shape(d);
  req.add_raw_input_contents(std::string(3 * 16 * 16, '\x40'));
  inference::ModelInferResponse response;
  {
    grpc::ClientContext ctx;
    ASSERT_OK(ToAbsl(oip->ModelInfer(&ctx, req, &response)));
    EXPECT_EQ(response.model_name(), kPairModel);
    EXPECT_EQ(response.model_version(), "w1");
  }
  req.set_model_name("nope");
  grpc::ClientContext ctx;
  EXPECT_THAT(ToAbsl(oip->ModelInfer(&ctx, req, &response)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

}  // namespace
}  // namespace testing
}  // namespace hapi
