// pch.h — precompiled header: the heavy, stable includes every translation unit pays for.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>
