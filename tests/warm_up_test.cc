// EarlyExitExecutor::WarmUp runs every stage and every head of its design
// once, so that a server has built the model's kernels before it serves.
#include <map>
#include <memory>

#include "core/executor.h"
#include "core/fake_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// The fake model, counting the stages and heads it runs.
class CountingModel : public Model {
 public:
  explicit CountingModel(std::shared_ptr<const Model> inner) : inner_(std::move(inner)) {}
  const v1::ModelManifest& manifest() const override { return inner_->manifest(); }
  v1::TensorShape input_shape() const override { return inner_->input_shape(); }
  absl::StatusOr<std::unique_ptr<Activations>> Input(const float* pixels, int n) const override {
    last_batch = n;
    return inner_->Input(pixels, n);
  }
  absl::Status RunStage(int stage, Activations& x) const override {
    ++stages[stage];
    return inner_->RunStage(stage, x);
  }
  absl::Status RunHead(int exit, const Activations& x, std::vector<float>* p) const override {
    ++heads[exit];
    return inner_->RunHead(exit, x, p);
  }
  mutable std::map<int, int> stages, heads;
  mutable int last_batch = 0;

 private:
  std::shared_ptr<const Model> inner_;
};

TEST(WarmUpTest, RunsEveryStageAndEveryHeadOfTheDesignOnce) {
  FakeModelSpec spec;
  spec.num_stages = 5;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> fake, MakeFakeModel(FakeModelManifest(spec)));
  auto counting = std::make_shared<CountingModel>(fake);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EarlyExitExecutor> executor,
                       EarlyExitExecutor::Create(counting, Design::Shared({1, 3}, 0.5f)));
  EXPECT_TRUE(counting->stages.empty()) << "creating an executor runs nothing";
  ASSERT_OK(executor->WarmUp(2));
  EXPECT_EQ(counting->last_batch, 2);
  EXPECT_THAT(counting->stages,
              ElementsAre(Pair(0, 1), Pair(1, 1), Pair(2, 1), Pair(3, 1), Pair(4, 1)));
  EXPECT_THAT(counting->heads, ElementsAre(Pair(1, 1), Pair(3, 1), Pair(4, 1)));
}

}  // namespace
}  // namespace hapi
