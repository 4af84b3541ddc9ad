#include "core/repository_layout.h"

#include "absl/strings/str_cat.h"

namespace hapi {

std::string RepositoryLayout::ModelsDir() const { return absl::StrCat(root_, "/models"); }
std::string RepositoryLayout::DevicesDir() const { return absl::StrCat(root_, "/devices"); }
std::string RepositoryLayout::VariantsDir() const { return absl::StrCat(root_, "/variants"); }

std::string RepositoryLayout::ModelDir(absl::string_view model) const {
  return absl::StrCat(root_, "/models/", model);
}
std::string RepositoryLayout::DeviceDir(absl::string_view device) const {
  return absl::StrCat(root_, "/devices/", device);
}
std::string RepositoryLayout::DeviceProfile(absl::string_view device) const {
  return absl::StrCat(DeviceDir(device), "/", kProfileFile);
}
std::string RepositoryLayout::VariantDir(absl::string_view variant) const {
  return absl::StrCat(root_, "/variants/", variant);
}
std::string RepositoryLayout::VariantManifest(absl::string_view variant) const {
  return absl::StrCat(VariantDir(variant), "/", kVariantFile);
}

}  // namespace hapi
