// Pillow's two-pass convolution resampling (libImaging/Resample.c), for 8-bit RGB and the bicubic filter.
//
// What must match for identical bytes, in Pillow's order:
//  - per output pixel, a window of source pixels around center = (x + 0.5) * scale; when shrinking, the filter is
//    stretched by the scale (antialiasing), support = 2 * max(scale, 1);
//  - weights in double, normalised to sum 1, then turned into 22-bit fixed point (round half away from zero);
//  - each pass accumulates integer products from a bias of 1 << 21 and clamps (value >> 22) to 0..255;
//  - the horizontal pass first (over only the rows the vertical pass reads), unless the height shrinks more than
//    twice as much as the width, in which case the vertical pass goes first.
// Compile without floating-point contraction (-ffp-contract=off): a fused multiply-add rounds differently from
// Pillow's separate multiply and add, and one weight off by a unit in the last place can move a pixel by one.
#include "resize.h"

#include <cmath>

namespace ek {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kBicubicSupport = 2.0;

double bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

struct Coefficients {
    int ksize = 0;
    std::vector<int> bounds;  // [out, 2]: first source index, count
    std::vector<int> weights; // [out, ksize], fixed point
};

Coefficients precompute(int in_size, int out_size) {
    Coefficients c;
    const float in0 = 0.0f, in1 = float(in_size);  // Pillow takes the box as floats
    double scale = double(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = kBicubicSupport * filterscale;
    c.ksize = int(std::ceil(support)) * 2 + 1;
    c.bounds.resize(size_t(out_size) * 2);
    c.weights.assign(size_t(out_size) * c.ksize, 0);
    std::vector<double> k(c.ksize);
    double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; ++xx) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = int(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = int(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int x = 0;
        for (; x < xmax; ++x) {
            double w = bicubic((x + xmin - center + 0.5) * inv_filterscale);
            k[x] = w;
            ww += w;
        }
        if (ww != 0.0) {
            for (x = 0; x < xmax; ++x) k[x] /= ww;
        }
        for (x = 0; x < c.ksize; ++x) {
            double v = x < xmax ? k[x] : 0.0;
            c.weights[size_t(xx) * c.ksize + x] =
                v < 0 ? int(-0.5 + v * (1 << kPrecisionBits)) : int(0.5 + v * (1 << kPrecisionBits));
        }
        c.bounds[size_t(xx) * 2] = xmin;
        c.bounds[size_t(xx) * 2 + 1] = xmax;
    }
    return c;
}

inline uint8_t clip8(int v) {
    v >>= kPrecisionBits;  // arithmetic shift, as Pillow's lookup index
    return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

struct Image {
    int w, h;
    std::vector<uint8_t> px;  // [h, w, 3]
};

// Rows [first_row, first_row + rows) of `in`, resampled along x.
Image horizontal(const Image & in, int out_w, int first_row, int rows, const Coefficients & c) {
    Image out{out_w, rows, std::vector<uint8_t>(size_t(out_w) * rows * 3)};
    for (int y = 0; y < rows; ++y) {
        const uint8_t * line = &in.px[size_t(y + first_row) * in.w * 3];
        for (int xx = 0; xx < out_w; ++xx) {
            int xmin = c.bounds[size_t(xx) * 2], xmax = c.bounds[size_t(xx) * 2 + 1];
            const int * k = &c.weights[size_t(xx) * c.ksize];
            int s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; ++x) {
                const uint8_t * p = line + size_t(x + xmin) * 3;
                s0 += p[0] * k[x]; s1 += p[1] * k[x]; s2 += p[2] * k[x];
            }
            uint8_t * o = &out.px[(size_t(y) * out_w + xx) * 3];
            o[0] = clip8(s0); o[1] = clip8(s1); o[2] = clip8(s2);
        }
    }
    return out;
}

// Resampled along y; bounds index rows of `in` (already shifted by the rows a horizontal pass skipped).
Image vertical(const Image & in, int out_h, const Coefficients & c, int row_shift) {
    Image out{in.w, out_h, std::vector<uint8_t>(size_t(in.w) * out_h * 3)};
    for (int yy = 0; yy < out_h; ++yy) {
        int ymin = c.bounds[size_t(yy) * 2] - row_shift, ymax = c.bounds[size_t(yy) * 2 + 1];
        const int * k = &c.weights[size_t(yy) * c.ksize];
        for (int xx = 0; xx < in.w; ++xx) {
            int s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < ymax; ++y) {
                const uint8_t * p = &in.px[(size_t(y + ymin) * in.w + xx) * 3];
                s0 += p[0] * k[y]; s1 += p[1] * k[y]; s2 += p[2] * k[y];
            }
            uint8_t * o = &out.px[(size_t(yy) * in.w + xx) * 3];
            o[0] = clip8(s0); o[1] = clip8(s1); o[2] = clip8(s2);
        }
    }
    return out;
}

}  // namespace

std::vector<uint8_t> resize_bicubic(const uint8_t * rgb, int width, int height, int out_width, int out_height) {
    Image im{width, height, std::vector<uint8_t>(rgb, rgb + size_t(width) * height * 3)};
    if (out_width == width && out_height == height) return im.px;  // Pillow returns a copy
    bool need_h = out_width != width, need_v = out_height != height;
    bool horizontal_first = !((height - out_height) > 0 && (height - out_height) > (width - out_width) * 2);
    Coefficients cv, ch;
    if ((need_h && horizontal_first) || need_v) cv = precompute(height, out_height);
    if (need_h) ch = precompute(width, out_width);
    if (horizontal_first) {
        int shift = 0;
        if (need_h) {
            int first = cv.bounds.empty() ? 0 : cv.bounds[0];
            int last = cv.bounds.empty() ? height
                                         : cv.bounds[size_t(out_height) * 2 - 2] + cv.bounds[size_t(out_height) * 2 - 1];
            if (!need_v) first = 0, last = height;
            im = horizontal(im, out_width, first, last - first, ch);
            shift = first;
        }
        if (need_v) im = vertical(im, out_height, cv, shift);
    } else {
        if (need_v) im = vertical(im, out_height, cv, 0);
        if (need_h) im = horizontal(im, out_width, 0, im.h, ch);
    }
    return im.px;
}

}  // namespace ek
