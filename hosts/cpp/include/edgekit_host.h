/* edgekit_host.h: run an edgekit bundle from C or C++ (the bundle's GGUF decoder and mmproj through llama.cpp).
 *
 * Usable from C99 and C++. No function throws or aborts across this boundary: every failure is a status code,
 * with a one-line message from ek_last_error() (per thread).
 *
 *   ek_status err;
 *   ek_session * s = ek_open("bundle-cpu-int4", NULL, &err);          // verifies the manifest and every artifact
 *   if (!s) { fprintf(stderr, "%s\n", ek_last_error()); return 1; }
 *   ek_ask(s, rgb, width, height, "Is the light red?", NULL, print_piece, NULL, NULL);
 *   ek_close(s);
 *
 * ek_open refuses a bundle whose manifest schema it does not know, whose seal (sha256 over the RFC 8785 canonical
 * form, as edgekit's) does not match, that holds a duplicate key, an unsafe path or an out-of-range number, or any of
 * whose artifacts is a link, not a regular file, or differs (size or sha256) from the manifest, naming the field or
 * file, before it loads anything. Each artifact is hashed from the descriptor llama.cpp then loads it through. ek_ask resizes the image to the bundle's resolution exactly as edgekit's Python processor does
 * (Pillow's bicubic resampling), builds the prompt from the bundle's chat template frames, and decodes greedily.
 */
#ifndef EDGEKIT_HOST_H
#define EDGEKIT_HOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(EK_BUILDING)
#define EK_API __attribute__((visibility("default")))
#else
#define EK_API
#endif

#define EK_HOST_VERSION 2
#define EK_BUNDLE_SCHEMA "edgekit.bundle/3"

typedef enum ek_status {
    EK_OK = 0,
    EK_ERR_ARGUMENT = 1,    /* a NULL or out-of-range argument */
    EK_ERR_IO = 2,          /* a file is missing or cannot be read */
    EK_ERR_MANIFEST = 3,    /* edgekit.json: unreadable, unknown schema, broken seal, unsafe path */
    EK_ERR_INTEGRITY = 4,   /* an artifact's size or sha256 differs from the manifest */
    EK_ERR_UNSUPPORTED = 5, /* a bundle this host cannot run (decoder not GGUF, no mmproj, no prompt frames) */
    EK_ERR_RUNTIME = 6,     /* llama.cpp or libmtmd failed */
    EK_ERR_CANCELLED = 7,   /* the token callback asked to stop */
    EK_ERR_INTERNAL = 8     /* a bug: please report it with the message */
} ek_status;

typedef struct ek_session ek_session;

typedef struct ek_open_options {
    int32_t n_threads;        /* 0: every core this process may use */
    int32_t n_ctx;            /* 0: the bundle's planned context */
    int32_t verify_artifacts; /* 1 (default): sha256 of every artifact before loading; 0 skips it (trusted media) */
} ek_open_options;

typedef struct ek_ask_options {
    int32_t think;          /* 0 (default): no thinking aloud (the prompt carries the empty think block) */
    int32_t max_new_tokens; /* default 64 */
} ek_ask_options;

typedef struct ek_timings {
    double preprocess_ms; /* resize and tokenization */
    double vision_ms;     /* the mmproj tower over the image */
    double prefill_ms;    /* the decoder over the prompt until the first token is chosen */
    double decode_ms;     /* every later token */
    double total_ms;
    int32_t prompt_tokens;
    int32_t generated_tokens;
} ek_timings;

/* One generated token: its text piece (bytes, possibly part of a UTF-8 character) and id. Return nonzero to stop. */
typedef int (*ek_token_callback)(const char * piece, size_t length, int32_t token_id, void * user);

EK_API void ek_open_options_default(ek_open_options * options);
EK_API void ek_ask_options_default(ek_ask_options * options);

/* Open a bundle directory; NULL on failure with *error set (error may be NULL) and ek_last_error() saying why. */
EK_API ek_session * ek_open(const char * bundle_dir, const ek_open_options * options, ek_status * error);

/* Answer one question about one RGB image (rgb: width*height*3 bytes, row-major; NULL with width = height = 0 for
 * a text-only question). Streams tokens through on_token (may be NULL); fills timings when not NULL. */
EK_API ek_status ek_ask(ek_session * session, const uint8_t * rgb, int32_t width, int32_t height, const char * prompt,
                 const ek_ask_options * options, ek_token_callback on_token, void * user, ek_timings * timings);

/* One RGB image: width*height*3 bytes, row-major. */
typedef struct ek_image {
    const uint8_t * rgb;
    int32_t width;
    int32_t height;
} ek_image;

#define EK_MAX_IMAGES 16

/* ek_ask for several cameras: n_images images (0..EK_MAX_IMAGES), in this order in front of the question, as
 * edgekit's Python pipelines put them. More than one needs a bundle whose chat template renders images in a row
 * (its manifest's prompt.images_in_a_row; EK_ERR_UNSUPPORTED otherwise). */
EK_API ek_status ek_ask_images(ek_session * session, const ek_image * images, int32_t n_images, const char * prompt,
                               const ek_ask_options * options, ek_token_callback on_token, void * user,
                               ek_timings * timings);

/* Decode an image file (PNG or JPEG, in the host itself: libpng, libjpeg; no external program) into RGB bytes, with
 * its EXIF orientation applied and the same pixels as edgekit's Python loader; free with ek_image_free. A file that is
 * not a regular file, not PNG/JPEG, corrupt, or over 178,956,970 pixels is refused. session may be NULL. */
EK_API ek_status ek_image_load(ek_session * session, const char * path, uint8_t ** rgb, int32_t * width, int32_t * height);
EK_API void ek_image_free(uint8_t * rgb);

/* Resize RGB bytes exactly as Pillow's bicubic Image.resize (what edgekit's processor uses). out: out_w*out_h*3. */
EK_API ek_status ek_resize_bicubic(const uint8_t * rgb, int32_t width, int32_t height, uint8_t * out, int32_t out_width,
                            int32_t out_height);

/* The prompt text ek_ask gives libmtmd for a question about with_image images (0, 1, or more: one libmtmd marker
 * per image), NUL-terminated in out when it fits; *needed (may be NULL) gets its length + 1. */
EK_API ek_status ek_prompt(const ek_session * session, const char * question, int32_t think, int32_t with_image,
                           char * out, size_t out_size, size_t * needed);

/* The bundle's input size: the width and height ek_ask resizes images to. */
EK_API ek_status ek_input_size(const ek_session * session, int32_t * width, int32_t * height);

EK_API void ek_close(ek_session * session);

/* The message of the last failed call on this thread ("" when none). Valid until the next call on this thread. */
EK_API const char * ek_last_error(void);
EK_API const char * ek_status_name(ek_status status);

#ifdef __cplusplus
}
#endif
#endif /* EDGEKIT_HOST_H */
