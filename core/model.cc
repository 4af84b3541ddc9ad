#include "core/model.h"

namespace hapi {

int Model::input_size() const {
  const v1::TensorShape shape = input_shape();
  return shape.channels() * shape.height() * shape.width();
}

}  // namespace hapi
