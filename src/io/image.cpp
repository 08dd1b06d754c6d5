#include "io/image.h"

#include <png.h>
#include <jpeglib.h>
#include <jerror.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>
#include <algorithm>

#include "util/atomic_file.h"
#include "util/error.h"

namespace rar::io {
namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  if (s.size() < suf.size()) return false;
  std::string tail = s.substr(s.size() - suf.size());
  for (auto& c : tail) c = static_cast<char>(std::tolower(c));
  return tail == suf;
}

void check_hwc(const torch::Tensor& t, const std::string& what) {
  check(t.dim() == 3 && (t.size(2) == 1 || t.size(2) == 3) && t.scalar_type() == torch::kUInt8, what,
        ": expected a uint8 image [H,W,1|3], got ", t.sizes(), " ", c10::toString(t.scalar_type()));
}

void check_image_size(int64_t w, int64_t h, const std::string& path) {
  check(w > 0 && h > 0 && w <= kMaxImageSide && h <= kMaxImageSide && w * h <= kMaxImagePixels, path, ": image of ", w,
        " x ", h, " pixels (at most ", kMaxImagePixels >> 20, " megapixels and ", kMaxImageSide, " a side are read)");
}

// PNG as Pillow's Image.open(...).convert("RGB"/"L") reads it: palettes expanded, 1/2/4-bit grey
// expanded, 16-bit samples reduced to their high byte (v >> 8), alpha and tRNS transparency
// dropped (not composited), no gamma applied; grey stays one channel. libpng's low-level API: its
// simplified API would treat 16-bit data as linear light and re-encode it (values 12 -> 63).
struct PngReader {
  const std::string& data;
  size_t at = 0;
};
void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->data.size() - r->at) png_error(png, "file ends early");
  std::memcpy(out, r->data.data() + r->at, n);
  r->at += n;
}
struct PngError {
  char message[320] = {0};
  bool whole = false;  // message is the whole error line (the image's size), not libpng's
};
void png_fail(png_structp png, png_const_charp msg) {
  auto* e = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(e->message, sizeof e->message, "%s", msg);
  png_longjmp(png, 1);
}
void png_warn(png_structp, png_const_charp) {}  // benign (e.g. an unknown chunk): read on

torch::Tensor decode_png(const std::string& data, const std::string& path) {
  PngError err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_fail, png_warn);
  check(png != nullptr, path, ": cannot start the PNG reader");
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    fail(path, ": cannot start the PNG reader");
  }
  PngReader reader{data};
  torch::Tensor t;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    if (err.whole) fail(std::string(err.message));
    fail(path, ": bad PNG (", err.message, ")");
  }
  png_set_read_fn(png, &reader, png_read_memory);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  if (int64_t(w) * h > kMaxImagePixels || w > kMaxImageSide || h > kMaxImageSide || w == 0 || h == 0) {
    std::snprintf(err.message, sizeof err.message, "%s: image of %u x %u pixels (at most %lld megapixels and %lld a side are read)",
                  path.c_str(), w, h, static_cast<long long>(kMaxImagePixels >> 20), static_cast<long long>(kMaxImageSide));
    err.whole = true;
    png_longjmp(png, 1);
  }
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);  // the high byte
  // an alpha channel, or the alpha a palette's (or grey's) tRNS chunk expands into: dropped
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  if (channels != 1 && channels != 3) png_error(png, "unexpected channel count");
  t = torch::empty({int64_t(h), int64_t(w), channels}, torch::kUInt8);
  rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = t.data_ptr<uint8_t>() + size_t(y) * w * channels;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return t;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}
// libjpeg reports a file that ends early as a warning and pads the image with grey; we refuse it.
void jpeg_warning(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

torch::Tensor decode_jpeg(const std::string& data, const std::string& path) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_warning;
  torch::Tensor t;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail(path, ": bad JPEG (", err.message, ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  jpeg_read_header(&cinfo, TRUE);
  if (int64_t(cinfo.image_width) * cinfo.image_height > kMaxImagePixels || cinfo.image_width > kMaxImageSide ||
      cinfo.image_height > kMaxImageSide) {
    const int64_t w = cinfo.image_width, h = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    check_image_size(w, h, path);
  }
  // CMYK and YCCK files come out as CMYK (libjpeg converts them no further) and are turned into
  // RGB as Pillow's convert("RGB") does; an Adobe marker means the values are stored inverted.
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int comps = cinfo.output_components;
  t = torch::empty({cinfo.output_height, cinfo.output_width, cmyk ? 3 : comps}, torch::kUInt8);
  auto* base = t.data_ptr<uint8_t>();
  const size_t stride = static_cast<size_t>(cinfo.output_width) * (cmyk ? 3 : comps);
  std::vector<uint8_t> line(cmyk ? static_cast<size_t>(cinfo.output_width) * 4 : 0);
  const bool inverted = cinfo.saw_Adobe_marker;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW out = base + cinfo.output_scanline * stride;
    JSAMPROW row = cmyk ? line.data() : out;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (!cmyk) continue;
    for (JDIMENSION x = 0; x < cinfo.output_width; ++x) {
      int v[4];
      for (int c = 0; c < 4; ++c) v[c] = inverted ? 255 - line[4 * x + c] : line[4 * x + c];
      const int nk = 255 - v[3];
      for (int c = 0; c < 3; ++c) {  // Pillow's cmyk2rgb: nk - round(v·nk / 255), clipped
        const int m = v[c] * nk + 128;
        out[3 * x + c] = static_cast<uint8_t>(std::clamp(nk - (((m >> 8) + m) >> 8), 0, 255));
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return t;
}

std::string encode_jpeg(const torch::Tensor& hwc, int quality, const std::string& path) {
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buf);
    fail(path, ": JPEG encoding failed (", err.message, ")");
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = static_cast<JDIMENSION>(hwc.size(1));
  cinfo.image_height = static_cast<JDIMENSION>(hwc.size(0));
  cinfo.input_components = static_cast<int>(hwc.size(2));
  cinfo.in_color_space = hwc.size(2) == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  auto* base = hwc.data_ptr<uint8_t>();
  const size_t stride = static_cast<size_t>(hwc.size(1) * hwc.size(2));
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = base + cinfo.next_scanline * stride;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buf), size);
  std::free(buf);
  return out;
}

}  // namespace

torch::Tensor decode_image(const std::string& data, const std::string& path) {
  if (data.size() >= 8 && std::memcmp(data.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return decode_png(data, path);
  if (data.size() >= 3 && std::memcmp(data.data(), "\xff\xd8\xff", 3) == 0) return decode_jpeg(data, path);
  fail(path, ": not a PNG or JPEG file");
}

// Image files are compressed: anything over 1 GiB is not one we would decode within the pixel cap.
torch::Tensor read_image(const std::string& path) { return decode_image(read_file(path, 1ull << 30), path); }

std::string encode_png(const torch::Tensor& hwc_in, bool fast) {
  check_hwc(hwc_in, "PNG");
  auto hwc = hwc_in.contiguous();
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(hwc.size(1));
  img.height = static_cast<png_uint_32>(hwc.size(0));
  img.format = hwc.size(2) == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (fast) img.flags |= PNG_IMAGE_FLAG_FAST;
  // One pass into a buffer of the largest size such an image can take (a first pass with no
  // buffer would compress the whole image only to learn its size).
  png_alloc_size_t size = PNG_IMAGE_PNG_SIZE_MAX(img);
  std::string out(size, '\0');
  check(png_image_write_to_memory(&img, out.data(), &size, 0, hwc.data_ptr(), 0, nullptr) != 0,
        "PNG encoding failed (", img.message, ")");
  out.resize(size);
  return out;
}

void write_image(const std::string& path, const torch::Tensor& hwc_in, int jpeg_quality) {
  check_hwc(hwc_in, path);
  auto hwc = hwc_in.contiguous();
  if (ends_with(path, ".png")) return write_file_atomic(path, encode_png(hwc));
  if (ends_with(path, ".jpg") || ends_with(path, ".jpeg")) return write_file_atomic(path, encode_jpeg(hwc, jpeg_quality, path));
  fail(path, ": unknown image extension (expected .png, .jpg or .jpeg)");
}

torch::Tensor to_uint8_nhwc(const torch::Tensor& images) {
  check(images.dim() == 4, "images: expected [N,C,H,W], got ", images.sizes());
  auto x = images.detach();
  if (x.scalar_type() != torch::kUInt8)
    x = (x.to(torch::kFloat32) * 255.0f + 0.5f).clamp(0, 255).to(torch::kUInt8);
  return x.permute({0, 2, 3, 1}).contiguous();
}

torch::Tensor make_grid(const torch::Tensor& images, int64_t cols, int64_t pad, int pad_value) {
  auto x = to_uint8_nhwc(images).cpu();  // [N,H,W,C]
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  check(N > 0 && cols > 0, "grid: nothing to draw");
  cols = std::min(cols, N);
  const int64_t rows = (N + cols - 1) / cols;
  auto grid = torch::full({rows * (H + pad) + pad, cols * (W + pad) + pad, C}, pad_value, torch::kUInt8);
  for (int64_t i = 0; i < N; ++i) {
    int64_t r = i / cols, c = i % cols;
    grid.narrow(0, pad + r * (H + pad), H).narrow(1, pad + c * (W + pad), W).copy_(x[i]);
  }
  return grid;
}

}  // namespace rar::io
