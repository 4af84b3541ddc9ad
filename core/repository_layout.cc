#include "core/repository_layout.h"

#include "absl/strings/str_cat.h"

namespace hapi {

std::string RepositoryLayout::ModelsDir() const { return absl::StrCat(root_, "/models"); }
std::string RepositoryLayout::DevicesDir() const { return absl::StrCat(root_, "/devices"); }
std::string RepositoryLayout::VariantsDir() const { return absl::StrCat(root_, "/variants"); }

std::string RepositoryLayout::ModelDir(absl::string_view model) const {
  return absl::StrCat(ModelsDir(), "/", model);
}
std::string RepositoryLayout::DeviceDir(absl::string_view device) const {
  return absl::StrCat(DevicesDir(), "/", device);
}
std::string RepositoryLayout::DeviceProfile(absl::string_view device) const {
  return absl::StrCat(DeviceDir(device), "/", kProfileFile);
}
std::string RepositoryLayout::VariantDir(absl::string_view variant) const {
  return absl::StrCat(VariantsDir(), "/", variant);
}
std::string RepositoryLayout::VariantManifest(absl::string_view variant) const {
  return absl::StrCat(VariantDir(variant), "/", kVariantFile);
}

std::string RepositoryLayout::OptimizerState() const {
  return absl::StrCat(root_, "/", kOptimizerStateFile);
}

}  // namespace hapi
