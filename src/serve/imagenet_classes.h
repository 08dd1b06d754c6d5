// imagenet_classes.h — the ImageNet class names (index = class id) for the published models.
#pragma once
#include <string>
#include <vector>

namespace rar::serve {

const std::vector<std::string>& imagenet_class_names();

}  // namespace rar::serve
