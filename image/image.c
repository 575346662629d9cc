/* DqImage allocation, cropping and transformers' longest-edge size rule. */
#include "image.h"

#include <string.h>

static DqImage *image_alloc(int width, int height, gboolean zero) {
    if (width <= 0 || height <= 0)
        return NULL;
    /* The decoders cap the pixel count (Pillow's decompression-bomb limit) before calling this,
     * so the size product cannot overflow size_t; g_try_ keeps a huge request from aborting. */
    size_t n = (size_t)width * (size_t)height * 3;
    uint8_t *pixels = zero ? g_try_malloc0(n) : g_try_malloc(n);
    if (pixels == NULL)
        return NULL;
    DqImage *img = g_new0(DqImage, 1);
    img->width = width;
    img->height = height;
    img->pixels = pixels;
    return img;
}

DqImage *dq_image_new(int width, int height) {
    return image_alloc(width, height, TRUE);
}

DqImage *dq_image_new_uninit(int width, int height) {
    return image_alloc(width, height, FALSE);
}

DqImage *dq_image_copy(const DqImage *img) {
    DqImage *out = img != NULL ? image_alloc(img->width, img->height, FALSE) : NULL;
    if (out != NULL)
        memcpy(out->pixels, img->pixels, (size_t)img->width * img->height * 3);
    return out;
}

void dq_image_free(DqImage *img) {
    if (img == NULL)
        return;
    g_free(img->pixels);
    g_free(img);
}

DqImage *dq_image_crop(const DqImage *src, int x, int y, int width, int height) {
    if (src == NULL || x < 0 || y < 0 || width <= 0 || height <= 0 || x > src->width - width ||
        y > src->height - height)
        return NULL;
    DqImage *out = dq_image_new_uninit(width, height);
    if (out == NULL)
        return NULL;
    size_t row = (size_t)width * 3;
    for (int r = 0; r < height; r++)
        memcpy(out->pixels + (size_t)r * row,
               src->pixels + ((size_t)(y + r) * src->width + (size_t)x) * 3, row);
    return out;
}

/* Python's int() on a double: truncation toward zero. The inputs here are small positive
 * numbers, so a plain cast is exact. */
static int py_int(double v) {
    return (int)v;
}

void dq_image_fit_longest_edge(int width, int height, int longest_edge, int *out_width,
                               int *out_height) {
    /* _resize_output_size_rescale_to_max_len: the long side becomes longest_edge, the short side
     * follows the aspect ratio computed as a double (2048x211 -> 210, not 211), odd -> +1. */
    double aspect = (double)width / (double)height;
    int w, h;
    if (width >= height) {
        w = longest_edge;
        h = py_int(w / aspect);
        if (h % 2 != 0)
            h += 1;
    } else {
        h = longest_edge;
        w = py_int(h * aspect);
        if (w % 2 != 0)
            w += 1;
    }
    h = MAX(h, 1);
    w = MAX(w, 1);

    /* _resize_output_size_scale_below_upper_bound with transformers' MAX_IMAGE_SIZE = 4096: the
     * aspect ratio is recomputed from the first result and there is no odd +1 here. */
    const int cap = DQ_IMAGE_MAX_SIZE;
    aspect = (double)w / (double)h;
    if (w >= h && w > cap) {
        w = cap;
        h = py_int(w / aspect);
    } else if (h > w && h > cap) {
        h = cap;
        w = py_int(h * aspect);
    }
    *out_width = MAX(w, 1);
    *out_height = MAX(h, 1);
}
