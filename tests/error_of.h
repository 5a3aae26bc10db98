// Test helpers shared by the test files: the message of the moesae::Error a call throws.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace moesae::testing {

// Runs fn and returns the message of the moesae::Error it throws (a test failure if it throws none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a moesae::Error";
  return "";
}

}  // namespace moesae::testing
