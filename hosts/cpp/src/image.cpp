#include "image.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>

#include <jpeglib.h>
#include <png.h>

#include "errors.h"

namespace ek {
namespace {

bool size_ok(int64_t w, int64_t h) { return w >= 1 && h >= 1 && w <= 65535 && h <= 65535 && w * h <= kMaxImagePixels; }

void check_size(int64_t w, int64_t h, const std::string & label) {
    if (!size_ok(w, h))
        throw Error(EK_ERR_ARGUMENT, label + ": image of " + std::to_string(w) + "x" + std::to_string(h) +
                    " pixels is too large to decode safely (at most " + std::to_string(kMaxImagePixels) + " pixels)");
}

// ---- EXIF orientation (TIFF IFD0 tag 0x0112), as Pillow's ImageOps.exif_transpose reads it ----------------------

int exif_orientation(const unsigned char * p, size_t n) {
    if (n < 8) return 1;
    bool le = p[0] == 'I' && p[1] == 'I';
    if (!le && !(p[0] == 'M' && p[1] == 'M')) return 1;
    auto u16 = [&](size_t at) -> unsigned { return le ? p[at] | p[at + 1] << 8 : p[at] << 8 | p[at + 1]; };
    auto u32 = [&](size_t at) -> uint32_t {
        return le ? uint32_t(p[at]) | uint32_t(p[at + 1]) << 8 | uint32_t(p[at + 2]) << 16 | uint32_t(p[at + 3]) << 24
                  : uint32_t(p[at]) << 24 | uint32_t(p[at + 1]) << 16 | uint32_t(p[at + 2]) << 8 | uint32_t(p[at + 3]);
    };
    if (u16(2) != 42) return 1;
    size_t ifd = u32(4);
    if (ifd + 2 > n) return 1;
    unsigned count = u16(ifd);
    for (unsigned i = 0; i < count; ++i) {
        size_t e = ifd + 2 + size_t(i) * 12;
        if (e + 12 > n) break;
        if (u16(e) == 0x0112 && u16(e + 2) == 3) {  // SHORT
            unsigned v = u16(e + 8);
            return v >= 1 && v <= 8 ? int(v) : 1;
        }
    }
    return 1;
}

// Pillow's transposes for orientations 2..8 (exif_transpose): the output pixel (x, y) reads input (sx, sy).
RgbImage orient(RgbImage in, int orientation) {
    if (orientation <= 1) return in;
    const int w = in.width, h = in.height;
    bool swap = orientation >= 5;
    RgbImage out;
    out.width = swap ? h : w;
    out.height = swap ? w : h;
    out.pixels.resize(in.pixels.size());
    for (int y = 0; y < out.height; ++y) {
        for (int x = 0; x < out.width; ++x) {
            int sx = x, sy = y;
            switch (orientation) {
                case 2: sx = w - 1 - x; break;                    // FLIP_LEFT_RIGHT
                case 3: sx = w - 1 - x; sy = h - 1 - y; break;    // ROTATE_180
                case 4: sy = h - 1 - y; break;                    // FLIP_TOP_BOTTOM
                case 5: sx = y; sy = x; break;                    // TRANSPOSE
                case 6: sx = y; sy = h - 1 - x; break;            // ROTATE_270 (clockwise)
                case 7: sx = w - 1 - y; sy = h - 1 - x; break;    // TRANSVERSE
                case 8: sx = w - 1 - y; sy = x; break;            // ROTATE_90 (counter-clockwise)
            }
            std::memcpy(&out.pixels[(size_t(y) * out.width + x) * 3], &in.pixels[(size_t(sy) * w + sx) * 3], 3);
        }
    }
    return out;
}

// ---- PNG ---------------------------------------------------------------------------------------------------------

struct PngSource {
    const std::string * bytes;
    size_t at;
};

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
    auto * src = static_cast<PngSource *>(png_get_io_ptr(png));
    if (src->at + n > src->bytes->size()) png_error(png, "truncated file");
    std::memcpy(out, src->bytes->data() + src->at, n);
    src->at += n;
}

void png_fail(png_structp png, png_const_charp message) {
    auto * why = static_cast<char *>(png_get_error_ptr(png));
    std::snprintf(why, 200, "%s", message);
    png_longjmp(png, 1);
}

void png_quiet(png_structp, png_const_charp) {}

// Buffers live in the caller's frame: nothing this function's setjmp could leave indeterminate is destroyed after a
// longjmp (the C library's frames between have no destructors).
struct Decoded {
    RgbImage img;
    std::vector<unsigned char *> rows;
    std::vector<uint8_t> cmyk;
    int orientation = 1;
};

void decode_png(const std::string & bytes, const std::string & label, Decoded & d) {
    char why[200] = "corrupt PNG";
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, why, png_fail, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!info) {
        png_destroy_read_struct(&png, nullptr, nullptr);
        throw std::bad_alloc();
    }
    RgbImage & img = d.img;
    PngSource src{&bytes, 0};
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        throw Error(EK_ERR_IO, label + ": cannot be decoded as a PNG (" + why + ")");
    }
    png_set_read_fn(png, &src, png_read_memory);
    png_set_user_limits(png, 65535, 65535);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (!size_ok(w, h)) {
        png_destroy_read_struct(&png, &info, nullptr);
        check_size(w, h, label);
    }
    int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
    if (depth == 16) png_set_strip_16(png);                 // the high byte, as Pillow's 16-bit unpackers
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);  // tRNS ignored: Pillow's convert("RGB")
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    // Alpha and tRNS transparency are dropped, not composited (Pillow's convert("RGB")); palette expansion turns tRNS
    // into alpha, so strip whatever alpha the expansions made.
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != size_t(w) * 3) png_error(png, "unexpected row layout");
    img.width = int(w);
    img.height = int(h);
    img.pixels.resize(size_t(w) * h * 3);
    d.rows.resize(h);
    for (png_uint_32 y = 0; y < h; ++y) d.rows[y] = &img.pixels[size_t(y) * w * 3];
    png_read_image(png, d.rows.data());
    png_read_end(png, info);
    png_uint_32 exif_len = 0;
    png_bytep exif = nullptr;
#ifdef PNG_eXIf_SUPPORTED
    if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif) d.orientation = exif_orientation(exif, exif_len);
#endif
    png_destroy_read_struct(&png, &info, nullptr);
}

// ---- JPEG --------------------------------------------------------------------------------------------------------

struct JpegError {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    char why[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
    auto * err = reinterpret_cast<JpegError *>(cinfo->err);
    cinfo->err->format_message(cinfo, err->why);
    std::longjmp(err->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}

void decode_jpeg(const std::string & bytes, const std::string & label, Decoded & d) {
    jpeg_decompress_struct cinfo;
    JpegError err;
    std::memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_fail;
    err.mgr.emit_message = jpeg_quiet;
    std::snprintf(err.why, sizeof err.why, "corrupt JPEG");
    RgbImage & img = d.img;
    std::vector<uint8_t> & cmyk = d.cmyk;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        throw Error(EK_ERR_IO, label + ": cannot be decoded as a JPEG (" + err.why + ")");
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char *>(bytes.data()), static_cast<unsigned long>(bytes.size()));
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    if (!size_ok(cinfo.image_width, cinfo.image_height)) {
        jpeg_destroy_decompress(&cinfo);
        check_size(cinfo.image_width, cinfo.image_height, label);
    }
    bool four = cinfo.num_components == 4;
    cinfo.out_color_space = four ? JCS_CMYK : JCS_RGB;  // Pillow's defaults: islow IDCT, fancy upsampling
    jpeg_start_decompress(&cinfo);
    const size_t w = cinfo.output_width, h = cinfo.output_height, channels = cinfo.output_components;
    img.width = int(w);
    img.height = int(h);
    img.pixels.resize(w * h * 3);
    cmyk.resize(four ? w * channels : 0);
    while (cinfo.output_scanline < h) {
        size_t y = cinfo.output_scanline;
        JSAMPROW row = four ? cmyk.data() : &img.pixels[y * w * 3];
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (!four) continue;
        bool inverted = cinfo.saw_Adobe_marker;  // Adobe's CMYK is stored inverted (Pillow's "CMYK;I")
        for (size_t x = 0; x < w; ++x) {
            int k = inverted ? 255 - cmyk[x * 4 + 3] : cmyk[x * 4 + 3];
            int nk = 255 - k;
            for (int c = 0; c < 3; ++c) {  // Pillow's cmyk2rgb: nk - c*nk/255, rounded as its MULDIV255
                int v = inverted ? 255 - cmyk[x * 4 + c] : cmyk[x * 4 + c];
                int t = v * nk + 128;
                int r = nk - (((t >> 8) + t) >> 8);
                img.pixels[(y * w + x) * 3 + c] = uint8_t(r < 0 ? 0 : r > 255 ? 255 : r);
            }
        }
    }
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0) {
            d.orientation = exif_orientation(m->data + 6, m->data_length - 6);
            break;
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
}

}  // namespace

RgbImage decode_image(const std::string & bytes, const std::string & label) {
    const auto * b = reinterpret_cast<const unsigned char *>(bytes.data());
    Decoded d;
    if (bytes.size() >= 8 && png_sig_cmp(b, 0, 8) == 0) decode_png(bytes, label, d);
    else if (bytes.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) decode_jpeg(bytes, label, d);
    else throw Error(EK_ERR_IO, label + ": not a PNG or JPEG image; the host decodes those two only (convert it first)");
    return orient(std::move(d.img), d.orientation);
}

}  // namespace ek
