// Decoding an image file into RGB bytes, in the host itself (libpng, libjpeg): no external program is ever run, and
// what cannot be decoded is refused. The pixels are those edgekit's Python loader gives (edgekit/data/images.py,
// Pillow): 16-bit samples keep their high byte, alpha and palette transparency are dropped (not composited), CMYK
// converts as Pillow does, and the EXIF orientation is applied.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ek {

constexpr int64_t kMaxImagePixels = 178956970;  // Pillow's decompression-bomb error threshold (2 x 89,478,485)
constexpr size_t kMaxImageFileBytes = size_t(256) << 20;

struct RgbImage {
    std::vector<uint8_t> pixels;  // width * height * 3, row-major
    int width = 0, height = 0;
};

// PNG or JPEG bytes -> RGB. Throws ek::Error naming `label` for anything else, a corrupt file, or one too large.
RgbImage decode_image(const std::string & bytes, const std::string & label);

}  // namespace ek
