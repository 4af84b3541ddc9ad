#include "tests/server/server_fixture.h"
#include "tests/tiny_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/device_profile.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "gtest/gtest.h"
#include "model/trainer.h"
#include "stb_image_write.h"
#include "tests/test_util.h"

#ifndef HAPI_SERVER_TEST_CACHE_DIR
#define HAPI_SERVER_TEST_CACHE_DIR ""
#endif

namespace hapi {
namespace testing {
namespace {

constexpr int kCachedImages = 200;

// Fails loudly: without its fixture no test of this binary means anything.
[[noreturn]] void Die(const std::string& what) {
  ADD_FAILURE() << what;
  std::fprintf(stderr, "server test fixture: %s\n", what.c_str());
  std::abort();
}

FashionMnist TrainingData() { return TinyTrainingData(kCachedImages); }

std::unique_ptr<EarlyExitModel> Train(const FashionMnist& data) {
  auto model = TrainTinyModel(kModelName, data);
  if (!model.ok()) Die(model.status().ToString());
  return *std::move(model);
}

// This executable's identity: a rebuilt binary retrains.
std::string BinaryKey() {
  struct stat st {};
  if (::stat("/proc/self/exe", &st) != 0) return "";
  return absl::StrCat(st.st_size, "-", st.st_mtim.tv_sec, "-", st.st_mtim.tv_nsec);
}

// Trains the model and picks the test images, or reuses what an earlier
// process of this same binary left in the cache.
void TrainOrLoadCached(const std::string& model_dir, std::vector<uint8_t>* images,
                       std::vector<int>* labels) {
  const std::string cache_root = HAPI_SERVER_TEST_CACHE_DIR;
  const std::string key = BinaryKey();
  const bool use_cache = !cache_root.empty() && !key.empty() && std::getenv("HAPI_NO_CACHE") == nullptr;
  const std::string cache = absl::StrCat(cache_root, "/", key);
  if (use_cache) {
    auto cached = EarlyExitModel::Load(cache + "/model");
    auto bytes = ReadFile(cache + "/images.bin");
    if (cached.ok() && bytes.ok() && bytes->size() == kCachedImages * (kImagePixels + 1u)) {
      images->assign(bytes->begin(), bytes->begin() + kCachedImages * kImagePixels);
      labels->assign(bytes->begin() + kCachedImages * kImagePixels, bytes->end());
      if (absl::Status st = (*cached)->Save(model_dir); !st.ok()) Die(st.ToString());
      return;
    }
  }
  FashionMnist data = TrainingData();
  std::unique_ptr<EarlyExitModel> model = Train(data);
  if (absl::Status st = model->Save(model_dir); !st.ok()) Die(st.ToString());
  images->assign(data.test.pixels.begin(), data.test.pixels.end());
  labels->assign(data.test.labels.begin(), data.test.labels.end());
  if (use_cache && data.test.size() == kCachedImages) {
    std::error_code ec;
    // Older binaries' entries are dead weight.
    for (const auto& entry : std::filesystem::directory_iterator(cache_root, ec)) {
      if (entry.path().filename() != key) std::filesystem::remove_all(entry.path(), ec);
    }
    std::string bytes(data.test.pixels.begin(), data.test.pixels.end());
    bytes.append(data.test.labels.begin(), data.test.labels.end());
    // Best effort: a failed cache write only costs the next process a training.
    if (MakeDirectories(cache).ok() && model->Save(cache + "/model").ok()) {
      WriteFileAtomically(cache + "/images.bin", bytes).IgnoreError();
    }
  }
}

float MedianScore(const CalibrationTable& table, int exit) {
  std::vector<float> scores;
  for (int s = 0; s < table.num_samples(); ++s) scores.push_back(table.confidence(exit, s));
  std::nth_element(scores.begin(), scores.begin() + scores.size() / 2, scores.end());
  return scores[scores.size() / 2];
}

v1::VariantManifest MakeVariant(const std::string& id, const std::string& device,
                                std::vector<int> exits, std::vector<float> thresholds,
                                int num_exits) {
  v1::VariantManifest v;
  v.set_id(id);
  v.set_model(kModelName);
  v.set_device(device);
  v.set_exit_policy("max_softmax");
  for (int e : exits) v.add_enabled_exits(e);
  for (float t : thresholds) v.add_thresholds(t);
  // Any plausible split: the server only reports these.
  for (int e = 0; e < num_exits; ++e) {
    bool enabled = e == num_exits - 1 || std::count(exits.begin(), exits.end(), e) > 0;
    v.add_predicted_exit_ratios(enabled ? 1.0 / (exits.size() + 1) : 0.0);
  }
  v.mutable_sla()->set_latency_budget_ms(5);
  v.mutable_sla()->set_statistic(v1::MEAN);
  v.set_predicted_accuracy(0.8);
  v.mutable_predicted_latency()->set_mean_ms(1.5);
  v.set_created_at("2024-01-01T00:00:00Z");
  return v;
}

// A profile whose stages after the first look very slow.
// WriteTextProtoAtomically into a directory created first.
void WriteProto(const std::string& dir, const std::string& file, const google::protobuf::Message& m) {
  absl::Status st = MakeDirectories(dir);
  if (st.ok()) st = WriteTextProtoAtomically(absl::StrCat(dir, "/", file), m);
  if (!st.ok()) Die(st.ToString());
}

v1::DeviceProfile HandMadeProfile(const std::string& name, const v1::ModelManifest& manifest,
                                  double stage0_s, double later_stage_s) {
  auto p = MakeAnalyticProfile(name, manifest, 1e9, 0);
  if (!p.ok()) Die(p.status().ToString());
  v1::BatchProfile* b = p->mutable_batches(0);
  auto set = [](v1::PartLatency* part, double s) {
    part->set_median_s(s);
    part->set_p95_s(s);
    part->set_mean_s(s);
  };
  for (int s = 0; s < b->stages_size(); ++s) set(b->mutable_stages(s), s == 0 ? stage0_s : later_stage_s);
  for (int e = 0; e < b->exits_size(); ++e) set(b->mutable_exits(e), 0.0005);
  set(b->mutable_overhead(), 0);
  p->set_description("hand-made for the server tests");
  return *p;
}

struct Cleanup : public ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
  std::string dir;
};
Cleanup* const g_cleanup =
    static_cast<Cleanup*>(::testing::AddGlobalTestEnvironment(new Cleanup()));

struct Variants {
  std::map<std::string, v1::VariantManifest> by_id;
};
Variants* g_variants = nullptr;

}  // namespace

std::vector<float> ServerFixture::Pixels(int i) const {
  std::vector<float> out(784);
  for (int p = 0; p < 784; ++p) out[p] = image(i)[p] / 255.0f;
  return out;
}

v1::VariantManifest ServerFixture::Variant(const std::string& id) const {
  auto it = g_variants->by_id.find(id);
  if (it == g_variants->by_id.end()) Die("no fixture variant " + id);
  return it->second;
}

const ServerFixture& Fixture() {
  static const ServerFixture* fixture = [] {
    SetIntraOpThreads(1);
    auto* f = new ServerFixture();
    std::string pattern = (std::filesystem::path(::testing::TempDir()) / "hapi-server-test-XXXXXX").string();
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) Die("mkdtemp " + pattern);
    f->repository = buffer.data();
    g_cleanup->dir = f->repository;

    const std::string model_dir = f->repository + "/models/" + kModelName;
    if (absl::Status st = MakeDirectories(f->repository + "/models"); !st.ok()) Die(st.ToString());
    TrainOrLoadCached(model_dir, &f->images, &f->true_labels);
    f->num_images = static_cast<int>(f->true_labels.size());
    auto loaded = EarlyExitModel::Load(model_dir);
    if (!loaded.ok()) Die(loaded.status().ToString());
    f->model = *std::move(loaded);

    const v1::ModelManifest& manifest = f->model->manifest();
    auto dev = MakeAnalyticProfile("dev", manifest, 1e9, 1e-6);
    if (!dev.ok()) Die(dev.status().ToString());
    const std::vector<std::pair<std::string, v1::DeviceProfile>> devices = {
        {"dev", *dev},
        {"slow", HandMadeProfile("slow", manifest, 0.010, 5.0)},
        {"glacial", HandMadeProfile("glacial", manifest, 100.0, 100.0)},
    };
    for (const auto& [name, profile] : devices) {
      WriteProto(absl::StrCat(f->repository, "/devices/", name), "profile.pbtxt", profile);
    }

    const CalibrationTable& table = f->model->validation_table();
    const int num_exits = manifest.exits_size();
    g_variants = new Variants();
    for (const v1::VariantManifest& v : {
             MakeVariant("v1", "dev", {0, 2}, {MedianScore(table, 0), MedianScore(table, 2)}, num_exits),
             MakeVariant("v2", "dev", {1, 3}, {MedianScore(table, 1), MedianScore(table, 3)}, num_exits),
             MakeVariant("deep", "slow", {0, 2}, {1.0f, 1.0f}, num_exits),
             MakeVariant("stuck", "glacial", {0}, {1.0f}, num_exits),
         }) {
      g_variants->by_id[v.id()] = v;
      WriteProto(absl::StrCat(f->repository, "/variants/", v.id()), "variant.pbtxt", v);
    }
    return f;
  }();
  return *fixture;
}

Design DesignOf(const v1::VariantManifest& variant) {
  Design d;
  d.exits.assign(variant.enabled_exits().begin(), variant.enabled_exits().end());
  d.thresholds.assign(variant.thresholds().begin(), variant.thresholds().end());
  auto policy = ParseExitPolicy(variant.exit_policy());
  if (!policy.ok()) Die(policy.status().ToString());
  d.policy = *policy;
  return d;
}

const SampleResult& Expected(const std::string& variant, int i) {
  static absl::Mutex mu;
  static auto* executors = new std::map<std::string, std::unique_ptr<EarlyExitExecutor>>();
  static auto* results = new std::map<std::pair<std::string, int>, SampleResult>();
  const ServerFixture& f = Fixture();
  absl::MutexLock lock(&mu);
  auto found = results->find({variant, i});
  if (found != results->end()) return found->second;
  std::unique_ptr<EarlyExitExecutor>& executor = (*executors)[variant];
  if (executor == nullptr) {
    auto created = EarlyExitExecutor::Create(f.model, DesignOf(f.Variant(variant)));
    if (!created.ok()) Die(created.status().ToString());
    executor = *std::move(created);
  }
  std::vector<float> pixels = f.Pixels(i);
  auto run = executor->Run(pixels.data(), 1);
  if (!run.ok() || run->size() != 1) Die("executor failed: " + run.status().ToString());
  return (*results)[{variant, i}] = (*run)[0];
}

v1::ClassifyRequest RawRequest(const uint8_t* image, const std::string& request_id) {
  v1::ClassifyRequest r;
  r.mutable_image()->set_raw_uint8(std::string(reinterpret_cast<const char*>(image), 784));
  r.set_request_id(request_id);
  return r;
}

std::string EncodePng(const uint8_t* pixels, int width, int height, int channels) {
  std::string out;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
  };
  if (!stbi_write_png_to_func(append, &out, width, height, channels, pixels, width * channels)) {
    ADD_FAILURE() << "stbi_write_png_to_func failed";
  }
  return out;
}

TestServer::TestServer(TestServerOptions options) {
  const ServerFixture& f = Fixture();
  registry_ = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<ServerMetrics>(*registry_);
  servables_ = std::make_unique<ServableManager>(f.repository, ExecutorOptions(), metrics_.get());
  if (!options.variant.empty()) {
    auto loaded = servables_->Load(options.variant);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
  }
  batcher_ = std::make_unique<Batcher>(options.batcher);
  service_ = std::make_unique<InferenceService>(servables_.get(), batcher_.get(), options.service);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  if (options.max_receive_bytes > 0) builder.SetMaxReceiveMessageSize(options.max_receive_bytes);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) Die("cannot start the test server");
  stub_ = v1::Inference::NewStub(NewChannel());
}

TestServer::~TestServer() {
  stub_.reset();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
  batcher_.reset();
  server_.reset();
  service_.reset();
}

std::shared_ptr<grpc::Channel> TestServer::NewChannel() const {
  return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
}

grpc::Status Classify(v1::Inference::Stub& stub, const v1::ClassifyRequest& request,
                      v1::ClassifyResponse* response, absl::Duration timeout) {
  grpc::ClientContext ctx;
  if (timeout != absl::InfiniteDuration()) ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return stub.Classify(&ctx, request, response);
}

}  // namespace testing
}  // namespace hapi
