// Dense LSB-first bit packing: hand-computed layouts, a bit-by-bit reference packer,
// round trips for every width, and zeroed padding.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "qpart_kernels.h"

namespace {

using qpart::kernels::max_code;
using qpart::kernels::pack_rows;
using qpart::kernels::packed_row_bytes;
using qpart::kernels::unpack_rows;

// Straight from the format definition: code j occupies stream bits [j*bits, (j+1)*bits),
// stream bit i is bit (i % 8) of byte i / 8; padding is zero.
std::vector<uint8_t> ref_pack(const std::vector<uint8_t>& codes, int64_t rows, int64_t k,
                              int bits) {
  const int64_t rb = (k * bits + 7) / 8;
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      for (int b = 0; b < bits; ++b) {
        if ((codes[r * k + j] >> b) & 1) {
          const int64_t i = j * bits + b;
          out[r * rb + i / 8] |= static_cast<uint8_t>(1u << (i % 8));
        }
      }
    }
  }
  return out;
}

TEST(Bitpack, PackedRowBytes) {
  EXPECT_EQ(packed_row_bytes(0, 4), 0);
  EXPECT_EQ(packed_row_bytes(1, 1), 1);
  EXPECT_EQ(packed_row_bytes(8, 1), 1);
  EXPECT_EQ(packed_row_bytes(9, 1), 2);
  EXPECT_EQ(packed_row_bytes(3, 3), 2);   // 9 bits
  EXPECT_EQ(packed_row_bytes(8, 3), 3);   // 24 bits
  EXPECT_EQ(packed_row_bytes(1, 8), 1);
  EXPECT_EQ(packed_row_bytes(33, 5), 21);  // 165 bits
  EXPECT_EQ(packed_row_bytes(100, 7), 88);  // 700 bits
  EXPECT_EQ(packed_row_bytes(4096, 4), 2048);
  EXPECT_EQ(packed_row_bytes(int64_t{1} << 40, 3), (int64_t{3} << 40) / 8);  // no overflow
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t k = 0; k < 70; ++k) {
      EXPECT_EQ(packed_row_bytes(k, bits), (k * bits + 7) / 8) << k << " " << bits;
    }
  }
  EXPECT_EQ(max_code(1), 1);
  EXPECT_EQ(max_code(3), 7);
  EXPECT_EQ(max_code(8), 255);
}

// bits=3, codes {1,2,3,4,5,6,7,0}: the stream is sum(code_j << 3j)
//   = 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 | 6<<15 | 7<<18 | 0<<21 = 0x1F58D1,
// stored little-endian (LSB first): bytes D1 58 1F.
//   byte0 = 0b11010001: bits0-2 = 001 (1), bits3-5 = 010 (2), bits6-7 = low two bits of 3
//   byte1 = 0b01011000: bit0 = high bit of 3 (0), bits1-3 = 100 (4), bits4-6 = 101 (5),
//                       bit7 = low bit of 6 (0)
//   byte2 = 0b00011111: bits0-1 = high bits of 6 (11), bits2-4 = 111 (7), bits5-7 = 000 (0)
TEST(Bitpack, HandComputedThreeBit) {
  const std::vector<uint8_t> codes = {1, 2, 3, 4, 5, 6, 7, 0};
  std::vector<uint8_t> packed(3, 0xAA);
  pack_rows(codes.data(), 1, 8, 3, packed.data());
  EXPECT_EQ(packed, (std::vector<uint8_t>{0xD1, 0x58, 0x1F}));
  std::vector<uint8_t> back(8, 0xFF);
  unpack_rows(packed.data(), 1, 8, 3, back.data());
  EXPECT_EQ(back, codes);
}

TEST(Bitpack, HandComputedOtherWidths) {
  {  // bits=1: first code is the LSB of byte 0.
    const std::vector<uint8_t> codes = {1, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    std::vector<uint8_t> packed(2, 0xFF);
    pack_rows(codes.data(), 1, 10, 1, packed.data());
    EXPECT_EQ(packed, (std::vector<uint8_t>{0x01, 0x03}));
  }
  {  // bits=4: low nibble first.
    const std::vector<uint8_t> codes = {0x1, 0xE, 0x7};
    std::vector<uint8_t> packed(2, 0xFF);
    pack_rows(codes.data(), 1, 3, 4, packed.data());
    EXPECT_EQ(packed, (std::vector<uint8_t>{0xE1, 0x07}));
  }
  {  // bits=5: 31 | 1<<5 | 17<<10 = 0x443F -> bytes 3F 44.
    const std::vector<uint8_t> codes = {31, 1, 17};
    std::vector<uint8_t> packed(2, 0xFF);
    pack_rows(codes.data(), 1, 3, 5, packed.data());
    EXPECT_EQ(packed, (std::vector<uint8_t>{0x3F, 0x44}));
  }
  {  // bits=7, two rows of k=3 (21 bits -> 3 bytes each, 3 zero padding bits).
    // row0: 127 | 0<<7 | 127<<14 = 0x1FC07F -> 7F C0 1F ; row1: 1 | 2<<7 | 4<<14 = 0x10101
    const std::vector<uint8_t> codes = {127, 0, 127, 1, 2, 4};
    std::vector<uint8_t> packed(6, 0xFF);
    pack_rows(codes.data(), 2, 3, 7, packed.data());
    EXPECT_EQ(packed, (std::vector<uint8_t>{0x7F, 0xC0, 0x1F, 0x01, 0x01, 0x01}));
  }
  {  // bits=8 is a plain byte copy.
    const std::vector<uint8_t> codes = {0, 255, 128, 7};
    std::vector<uint8_t> packed(4, 0x55);
    pack_rows(codes.data(), 1, 4, 8, packed.data());
    EXPECT_EQ(packed, codes);
  }
}

TEST(Bitpack, MatchesReferenceAndRoundTripsAllWidths) {
  std::mt19937 rng(2024);
  const int64_t ks[] = {1, 3, 7, 9, 31, 33, 100};
  const int64_t row_counts[] = {1, 2, 5};
  for (int bits = 1; bits <= 8; ++bits) {
    std::uniform_int_distribution<int> code(0, max_code(bits));
    for (int64_t k : ks) {
      for (int64_t rows : row_counts) {
        SCOPED_TRACE(testing::Message() << "bits=" << bits << " k=" << k << " rows=" << rows);
        std::vector<uint8_t> codes(static_cast<size_t>(rows * k));
        for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
        if (k >= 2) {  // make sure the extremes appear
          codes[0] = 0;
          codes[1] = static_cast<uint8_t>(max_code(bits));
        }
        const int64_t rb = packed_row_bytes(k, bits);
        // Garbage-filled output plus a guard byte past the end.
        std::vector<uint8_t> packed(static_cast<size_t>(rows * rb + 1), 0xA5);
        pack_rows(codes.data(), rows, k, bits, packed.data());
        ASSERT_EQ(packed.back(), 0xA5) << "wrote past the end";
        packed.pop_back();
        ASSERT_EQ(packed, ref_pack(codes, rows, k, bits));

        std::vector<uint8_t> back(static_cast<size_t>(rows * k + 1), 0xEE);
        unpack_rows(packed.data(), rows, k, bits, back.data());
        ASSERT_EQ(back.back(), 0xEE) << "unpack wrote past the end";
        back.pop_back();
        ASSERT_EQ(back, codes);
      }
    }
  }
}

TEST(Bitpack, PaddingBitsAreZero) {
  // All-ones codes: every stream bit inside the row is 1, every padding bit must be 0.
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t k : {1, 3, 7, 9, 31, 33, 100}) {
      const int64_t rows = 3;
      const int64_t rb = packed_row_bytes(k, bits);
      std::vector<uint8_t> codes(static_cast<size_t>(rows * k),
                                 static_cast<uint8_t>(max_code(bits)));
      std::vector<uint8_t> packed(static_cast<size_t>(rows * rb), 0xFF);
      pack_rows(codes.data(), rows, k, bits, packed.data());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < rb * 8; ++i) {
          const int bit = (packed[r * rb + i / 8] >> (i % 8)) & 1;
          ASSERT_EQ(bit, i < k * bits ? 1 : 0)
              << "bits=" << bits << " k=" << k << " row=" << r << " stream bit " << i;
        }
      }
    }
  }
}

TEST(Bitpack, UnpackIgnoresNeighbouringRowsAndPadding) {
  // Rows are independent streams: garbage padding in the packed input must not leak into
  // codes (unpack masks to `bits`), and each row starts at its own byte boundary.
  const int bits = 3;
  const int64_t k = 3;  // 9 bits -> 2 bytes, 7 padding bits
  std::vector<uint8_t> packed = {0xFF, 0xFF, 0x00, 0xFF};
  std::vector<uint8_t> codes(6, 0);
  unpack_rows(packed.data(), 2, k, bits, codes.data());
  EXPECT_EQ(codes, (std::vector<uint8_t>{7, 7, 7, 0, 0, 4}));
}

}  // namespace
