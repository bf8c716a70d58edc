/* The header compiled as C (C99) and the library linked from a C program: argument errors come back as codes
 * with messages (no abort), the resize entry point runs, and with a bundle argument a whole question is answered.
 * Usage: c_api_test [BUNDLE] */
#include <stdio.h>
#include <string.h>

#include "edgekit_host.h"

static int failures = 0;
#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "FAIL %s (%s)\n", what, ek_last_error()); ++failures; } } while (0)

static int count_tokens(const char * piece, size_t length, int32_t id, void * user) {
    (void)piece; (void)length; (void)id;
    ++*(int *)user;
    return 0;
}

static int stop_at_once(const char * piece, size_t length, int32_t id, void * user) {
    (void)piece; (void)length; (void)id; (void)user;
    return 1;
}

int main(int argc, char ** argv) {
    ek_status st;
    ek_session * s = ek_open(NULL, NULL, &st);
    CHECK(s == NULL && st == EK_ERR_ARGUMENT && strlen(ek_last_error()) > 0, "NULL directory refused");
    s = ek_open("/nonexistent/bundle", NULL, &st);
    CHECK(s == NULL && st == EK_ERR_IO && strstr(ek_last_error(), "bundle directory") != NULL, "missing bundle refused");
    {
        uint8_t * px = NULL;
        int32_t w = 0, h = 0;
        CHECK(ek_image_load(NULL, "/", &px, &w, &h) == EK_ERR_IO && strstr(ek_last_error(), "directory") && !px,
              "a directory given as image refused unread");
        CHECK(ek_image_load(NULL, "/dev/null", &px, &w, &h) == EK_ERR_IO && strstr(ek_last_error(), "device") && !px,
              "a device given as image refused");
    }
    CHECK(ek_ask(NULL, NULL, 0, 0, "q", NULL, NULL, NULL, NULL) == EK_ERR_ARGUMENT, "NULL session refused");

    unsigned char in[5 * 3 * 3], out[2 * 2 * 3];
    for (int i = 0; i < (int)sizeof in; ++i) in[i] = (unsigned char)(i * 37);
    CHECK(ek_resize_bicubic(in, 5, 3, out, 2, 2) == EK_OK, "resize");
    CHECK(ek_resize_bicubic(in, 0, 3, out, 2, 2) == EK_ERR_ARGUMENT, "resize with a zero size refused");
    CHECK(strcmp(ek_status_name(EK_ERR_INTEGRITY), "integrity check failed") == 0, "status names");

    if (argc > 1) {
        ek_open_options o;
        ek_open_options_default(&o);
        s = ek_open(argv[1], &o, &st);
        CHECK(s != NULL && st == EK_OK, "bundle opens");
        if (s) {
            int32_t w = 0, h = 0;
            CHECK(ek_input_size(s, &w, &h) == EK_OK && w > 0 && h > 0, "input size");
            unsigned char rgb[37 * 23 * 3];
            for (int i = 0; i < (int)sizeof rgb; ++i) rgb[i] = (unsigned char)(i * 13);
            ek_ask_options a;
            ek_ask_options_default(&a);
            a.max_new_tokens = 3;
            int n = 0;
            ek_timings t;
            CHECK(ek_ask(s, rgb, 37, 23, "What is ahead?", &a, count_tokens, &n, &t) == EK_OK, "ask with an image");
            CHECK(n == t.generated_tokens && n <= 3 && t.prompt_tokens > 0 && t.total_ms > 0, "tokens and timings");
            CHECK(ek_ask(s, NULL, 0, 0, "Hello", &a, NULL, NULL, NULL) == EK_OK, "text-only question");
            CHECK(ek_ask(s, rgb, 37, 23, "\xff\xfe", &a, NULL, NULL, NULL) == EK_ERR_ARGUMENT, "invalid UTF-8 refused");
            CHECK(ek_ask(s, rgb, 0, 23, "q", &a, NULL, NULL, NULL) == EK_ERR_ARGUMENT, "zero width refused");
            {  /* several cameras: two images of different sizes; bad counts and a missing image refused */
                ek_image two[2] = {{rgb, 37, 23}, {rgb, 23, 37}};
                ek_timings t2;
                CHECK(ek_ask_images(s, two, 2, "What is ahead?", &a, NULL, NULL, &t2) == EK_OK &&
                      t2.prompt_tokens > t.prompt_tokens, "ask about two images");
                CHECK(ek_ask_images(s, two, EK_MAX_IMAGES + 1, "q", &a, NULL, NULL, NULL) == EK_ERR_ARGUMENT,
                      "too many images refused");
                CHECK(ek_ask_images(s, NULL, 1, "q", &a, NULL, NULL, NULL) == EK_ERR_ARGUMENT, "NULL images refused");
                two[1].rgb = NULL;
                CHECK(ek_ask_images(s, two, 2, "q", &a, NULL, NULL, NULL) == EK_ERR_ARGUMENT, "a missing image refused");
            }
            st = ek_ask(s, rgb, 37, 23, "q", &a, stop_at_once, NULL, NULL);
            CHECK(st == EK_ERR_CANCELLED || st == EK_OK, "callback can stop generation");
            ek_close(s);
        }
    }
    ek_close(NULL);
    if (failures) return 1;
    printf("c_api_test: all checks passed\n");
    return 0;
}
