// The server's Prometheus metrics, read straight from the registry of an
// in-process server after real traffic.
#include <map>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "rpc/grpc_status.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace testing {
namespace {

using Labels = std::map<std::string, std::string>;

// Every child of `name` whose labels include `labels`.
std::vector<prometheus::ClientMetric> Children(prometheus::Registry& registry,
                                               const std::string& name, const Labels& labels) {
  std::vector<prometheus::ClientMetric> out;
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& m : family.metric) {
      int matched = 0;
      for (const auto& l : m.label) {
        auto it = labels.find(l.name);
        if (it != labels.end() && it->second == l.value) ++matched;
      }
      if (matched == static_cast<int>(labels.size())) out.push_back(m);
    }
  }
  return out;
}

// The value of the one child (counter or gauge; histograms: sample count).
std::optional<double> Value(prometheus::Registry& registry, const std::string& name,
                            const Labels& labels) {
  std::vector<prometheus::ClientMetric> children = Children(registry, name, labels);
  if (children.size() != 1) return std::nullopt;
  const prometheus::ClientMetric& m = children[0];
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    switch (family.type) {
      case prometheus::MetricType::Counter:
        return m.counter.value;
      case prometheus::MetricType::Gauge:
        return m.gauge.value;
      case prometheus::MetricType::Histogram:
        return static_cast<double>(m.histogram.sample_count);
      default:
        return std::nullopt;
    }
  }
  return std::nullopt;
}

absl::Status LoadVariant(v1::Inference::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::LoadVariantRequest req;
  req.set_variant(id);
  v1::LoadVariantResponse response;
  return FromGrpcStatus(stub.LoadVariant(&ctx, req, &response));
}

TEST(MetricsTest, CountsRequestsExitsAndErrors) {
  const ServerFixture& f = Fixture();
  TestServer server;
  constexpr int kN = 30;
  std::map<int, int> per_exit;
  for (int i = 0; i < kN; ++i) {
    v1::ClassifyResponse r;
    ASSERT_TRUE(Classify(server.stub(), RawRequest(f.image(i)), &r).ok());
    ++per_exit[r.exit().exit_index()];
  }
  v1::ClassifyRequest bad;
  bad.mutable_image()->set_encoded("junk");
  v1::ClassifyResponse r;
  EXPECT_FALSE(Classify(server.stub(), bad, &r).ok());

  prometheus::Registry& reg = server.registry();
  EXPECT_EQ(Value(reg, "hapi_requests_total", {{"variant", "v1"}, {"code", "OK"}}), kN);
  EXPECT_EQ(Value(reg, "hapi_requests_total", {{"variant", "v1"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(Value(reg, "hapi_request_duration_seconds", {{"variant", "v1"}}), kN);
  EXPECT_EQ(Value(reg, "hapi_batch_size", {{"variant", "v1"}}), kN);
  EXPECT_EQ(Value(reg, "hapi_pending_requests", {{"variant", "v1"}}), 0);
  EXPECT_EQ(
      Value(reg, "hapi_variant_info", {{"variant", "v1"}, {"model", "tiny"}, {"device", "dev"}}),
      1);

  // One exits_total child per exit that can answer: the enabled ones and
  // "final"; each counts the answers given there.
  const v1::VariantManifest v = f.Variant("v1");
  const int final_exit = f.model->manifest().exits_size() - 1;
  EXPECT_EQ(Children(reg, "hapi_exits_total", {{"variant", "v1"}}).size(),
            static_cast<size_t>(v.enabled_exits_size() + 1));
  double total = 0;
  for (int e : {v.enabled_exits(0), v.enabled_exits(1), final_exit}) {
    const std::string label = e == final_exit ? "final" : absl::StrCat(e);
    std::optional<double> count =
        Value(reg, "hapi_exits_total", {{"variant", "v1"}, {"exit", label}});
    ASSERT_TRUE(count.has_value()) << label;
    EXPECT_EQ(*count, per_exit[e]) << "exit " << label;
    // Answers at every exit, or a counter attributed to the wrong exit (or
    // never counted) could still match.
    EXPECT_GT(per_exit[e], 0) << "no image of " << kN << " answered at exit " << label;
    total += *count;
  }
  EXPECT_EQ(total, kN);
  for (int k = 0; k < v.enabled_exits_size(); ++k) {
    std::optional<double> t =
        Value(reg, "hapi_exit_threshold",
              {{"variant", "v1"}, {"exit", absl::StrCat(v.enabled_exits(k))}});
    ASSERT_TRUE(t.has_value());
    EXPECT_FLOAT_EQ(static_cast<float>(*t), v.thresholds(k));
  }
  EXPECT_EQ(Value(reg, "hapi_sla_latency_seconds", {{"variant", "v1"}, {"statistic", "mean"}}),
            0.005);
}

TEST(MetricsTest, DeadlineAndQueueOutcomesAreCounted) {
  const ServerFixture& f = Fixture();
  TestServerOptions options;
  options.variant = "stuck";
  TestServer server(options);
  v1::ClassifyResponse r;
  grpc::Status st = Classify(server.stub(), RawRequest(f.image(0)), &r, absl::Seconds(5));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Value(server.registry(), "hapi_requests_total",
                  {{"variant", "stuck"}, {"code", "DEADLINE_EXCEEDED"}}),
            1);
  EXPECT_EQ(Value(server.registry(), "hapi_pending_requests", {{"variant", "stuck"}}), 0);
}

// Regression: hapi_variant_info is "the variant being served (value 1)"; after
// a swap v1 -> v2 the old variant's child must drop to 0.
TEST(MetricsTest, VariantInfoFollowsTheServedVariant) {
  TestServer server;
  const Labels v1{{"variant", "v1"}, {"model", kModelName}, {"device", "dev"}};
  EXPECT_EQ(Value(server.registry(), "hapi_variant_info", v1), 1);
  ASSERT_OK(LoadVariant(server.stub(), "v2"));
  EXPECT_EQ(Value(server.registry(), "hapi_variant_info",
                  {{"variant", "v2"}, {"model", kModelName}, {"device", "dev"}}),
            1);
  EXPECT_EQ(Value(server.registry(), "hapi_variant_info", v1), 0) << "v1 still reported as served";
}

// Every status code a request ends with is counted under its own label.
TEST(MetricsTest, EveryStatusCodeIsCountedUnderItsName) {
  TestServer server;
  v1::ClassifyRequest bad;
  bad.mutable_image()->set_encoded("not an image");
  v1::ClassifyResponse r;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Classify(server.stub(), bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Value(server.registry(), "hapi_requests_total",
                  {{"variant", "v1"}, {"code", "INVALID_ARGUMENT"}}),
            3);
  EXPECT_EQ(Value(server.registry(), "hapi_requests_total", {{"variant", "v1"}, {"code", "OK"}}),
            0);
}

// Regression: ServingStatus.exit_counts counts "answers per model exit since
// this variant loaded", so reloading a variant starts again from zero although
// the Prometheus counters (found again by label) keep counting.
TEST(MetricsTest, ExitCountsRestartWhenAVariantIsLoadedAgain) {
  const ServerFixture& f = Fixture();
  TestServer server;
  const int num_exits = f.model->manifest().exits_size();
  // The answers per exit since v1 loaded; empty exit_counts fail.
  auto answered = [&server, num_exits]() -> int64_t {
    grpc::ClientContext ctx;
    v1::ServingStatus status;
    EXPECT_TRUE(server.stub().GetServingStatus(&ctx, v1::ServingStatusRequest(), &status).ok());
    EXPECT_EQ(status.variant(), "v1");
    EXPECT_EQ(status.exit_counts_size(), num_exits);
    int64_t total = 0;
    for (int64_t c : status.exit_counts()) total += c;
    return total;
  };
  auto counted = [&server]() {
    double total = 0;
    for (const prometheus::ClientMetric& m :
         Children(server.registry(), "hapi_exits_total", {{"variant", "v1"}})) {
      total += m.counter.value;
    }
    return total;
  };
  v1::ClassifyResponse r;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Classify(server.stub(), RawRequest(f.image(i)), &r).ok());
  EXPECT_EQ(answered(), 5);
  EXPECT_EQ(counted(), 5);
  ASSERT_OK(LoadVariant(server.stub(), "v2"));
  ASSERT_OK(LoadVariant(server.stub(), "v1"));
  EXPECT_EQ(answered(), 0);
  EXPECT_EQ(counted(), 5) << "the Prometheus counters keep counting";
}

}  // namespace
}  // namespace testing
}  // namespace hapi
