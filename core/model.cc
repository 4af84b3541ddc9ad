#include "core/model.h"

#include "core/input_spec.h"

namespace hapi {

const v1::InputSpec& Model::input_spec() const {
  absl::call_once(input_spec_once_, [this] {
    absl::StatusOr<v1::InputSpec> spec = EffectiveInputSpec(manifest());
    input_spec_ = spec.ok() ? *std::move(spec) : manifest().input();
  });
  return input_spec_;
}

v1::TensorShape Model::input_shape() const { return InputShape(input_spec()); }

int Model::input_size() const {
  const v1::TensorShape shape = input_shape();
  return shape.channels() * shape.height() * shape.width();
}

}  // namespace hapi
