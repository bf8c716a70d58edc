// SHA-256 (FIPS 180-4) of files and strings, as lowercase hex: the digests edgekit's manifest records.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ek {

class Sha256 {
public:
    Sha256();
    void update(const void * data, size_t length);
    std::string hex_digest();  // finishes the hash; the object is spent afterwards

private:
    void block(const uint8_t * p);
    uint32_t h_[8];
    uint8_t buffer_[64];
    size_t buffered_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const std::string & data);
// Throws ek::Error (EK_ERR_IO) when the file cannot be read.
std::string sha256_file(const std::string & path);

}  // namespace ek
