// Image resizing that reproduces Pillow's Image.resize(size, Image.BICUBIC) on 8-bit RGB byte for byte, because
// edgekit's processor resizes with Pillow and a grounding answer is only right on the pixels the model was given.
#pragma once

#include <cstdint>
#include <vector>

namespace ek {

// rgb: width*height*3 bytes, row-major. Returns out_width*out_height*3 bytes.
std::vector<uint8_t> resize_bicubic(const uint8_t * rgb, int width, int height, int out_width, int out_height);

}  // namespace ek
