#include <gtest/gtest.h>

#include "backend/backend.h"

using namespace moesae;

TEST(CpuBackend, TopKTiesPreferSmallerIndex) {
  auto be = make_cpu_backend(1);
  Tensor x = host_tensor(1, 6);
  float v[6] = {1.f, 3.f, 3.f, 2.f, 3.f, 0.f};
  for (int i = 0; i < 6; ++i) x.host<float>()[i] = v[i];
  Tensor vals = host_tensor(1, 4), idx = host_tensor(1, 4, DType::I32);
  be->topk_rows(x, 4, vals, idx);
  EXPECT_EQ(idx.host<int32_t>()[0], 1);
  EXPECT_EQ(idx.host<int32_t>()[1], 2);
  EXPECT_EQ(idx.host<int32_t>()[2], 4);
  EXPECT_EQ(idx.host<int32_t>()[3], 3);
}
