// CRC32C (Castagnoli), the checksum of every spool record and batch. Uses the
// SSE4.2 crc32 instruction when the CPU has it, a table otherwise; both give
// the same values (a unit test checks them against each other and against
// the RFC 3720 test vectors).
#pragma once

#include <cstddef>
#include <cstdint>

namespace rw::fs {

uint32_t crc32c(const void* data, size_t len, uint32_t crc = 0) noexcept;
uint32_t crc32c_portable(const void* data, size_t len, uint32_t crc = 0) noexcept;

}  // namespace rw::fs
