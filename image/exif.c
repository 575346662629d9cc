/* EXIF / XMP orientation, resolved as Pillow 12's Image.getexif(), and ImageOps.exif_transpose.
 *
 * Only IFD0's Orientation tag (274) matters. Pillow raises on EXIF that is not a TIFF
 * structure; here unreadable metadata simply means "no orientation", since a broken tag should
 * not lose a page.
 */
#include "image_private.h"

#include <string.h>

void dq_image_meta_clear(DqImageMeta *meta) {
    if (meta->exif != NULL)
        g_byte_array_unref(meta->exif);
    if (meta->xmp != NULL)
        g_byte_array_unref(meta->xmp);
    meta->exif = meta->xmp = NULL;
}

static unsigned rd16(const uint8_t *p, gboolean big) {
    return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t rd32(const uint8_t *p, gboolean big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* The Orientation value in IFD0 of a TIFF-structured blob, or 0 when absent or unreadable. */
static int exif_orientation(const uint8_t *d, size_t len) {
    /* Exif.load strips any number of "Exif\0\0" prefixes. */
    while (len >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
        d += 6;
        len -= 6;
    }
    if (len < 8)
        return 0;
    gboolean big;
    if (memcmp(d, "MM\0*", 4) == 0)
        big = TRUE;
    else if (memcmp(d, "II*\0", 4) == 0)
        big = FALSE;
    else
        return 0;
    uint32_t ifd = rd32(d + 4, big);
    if (ifd > len || len - ifd < 2)
        return 0;
    unsigned n = rd16(d + ifd, big);
    for (unsigned i = 0; i < n; i++) {
        size_t at = (size_t)ifd + 2 + (size_t)i * 12;
        if (at + 12 > len)
            return 0;
        const uint8_t *e = d + at;
        if (rd16(e, big) != 274)
            continue;
        unsigned type = rd16(e + 2, big);
        uint32_t count = rd32(e + 4, big);
        if (count != 1) /* Pillow yields a tuple, which exif_transpose does not act on */
            return 0;
        switch (type) {
        case 1: /* BYTE */
            return e[8];
        case 3: /* SHORT */
            return (int)rd16(e + 8, big);
        case 4: /* LONG */
        {
            uint32_t v = rd32(e + 8, big);
            return v <= 9 ? (int)v : 0;
        }
        default:
            return 0;
        }
    }
    return 0;
}

/* Pillow's regex tiff:Orientation(="|>)([0-9]) over the XMP packet; 0 when absent. */
static int xmp_orientation(const uint8_t *d, size_t len) {
    static const char key[] = "tiff:Orientation";
    const size_t klen = sizeof key - 1;
    for (size_t i = 0; i + klen < len; i++) {
        if (memcmp(d + i, key, klen) != 0)
            continue;
        size_t j = i + klen;
        if (j + 1 < len && d[j] == '=' && d[j + 1] == '"')
            j += 2;
        else if (d[j] == '>')
            j += 1;
        else
            continue;
        if (j < len && d[j] >= '0' && d[j] <= '9')
            return d[j] - '0';
    }
    return 0;
}

int dq_image_meta_orientation(const DqImageMeta *meta) {
    int o = 0;
    if (meta->exif != NULL)
        o = exif_orientation(meta->exif->data, meta->exif->len);
    if (o == 0 && meta->xmp != NULL)
        o = xmp_orientation(meta->xmp->data, meta->xmp->len);
    return o == 0 ? 1 : o;
}

DqImage *dq_image_orient(const DqImage *img, int orientation) {
    /* Source pixel of output (x, y) per PIL's Transpose methods, as an affine map:
     * sx = a*x + b*y + c, sy = d*x + e*y + f. */
    const int w = img->width, h = img->height;
    int a = 1, b = 0, c = 0, d = 0, e = 1, f = 0;
    switch (orientation) {
    case 2: /* FLIP_LEFT_RIGHT */
        a = -1, c = w - 1;
        break;
    case 3: /* ROTATE_180 */
        a = -1, c = w - 1, e = -1, f = h - 1;
        break;
    case 4: /* FLIP_TOP_BOTTOM */
        e = -1, f = h - 1;
        break;
    case 5: /* TRANSPOSE */
        a = 0, b = 1, d = 1, e = 0;
        break;
    case 6: /* ROTATE_270: 90 degrees clockwise */
        a = 0, b = 1, d = -1, e = 0, f = h - 1;
        break;
    case 7: /* TRANSVERSE */
        a = 0, b = -1, c = w - 1, d = -1, e = 0, f = h - 1;
        break;
    case 8: /* ROTATE_90: 90 degrees counter-clockwise */
        a = 0, b = -1, c = w - 1, d = 1, e = 0;
        break;
    default:
        break;
    }
    gboolean swap = orientation >= 5 && orientation <= 8;
    DqImage *out = swap ? dq_image_new(h, w) : dq_image_new(w, h);
    if (out == NULL)
        return NULL;
    /* Offsets in pixels: one step along an output row, one step down an output column. */
    const ptrdiff_t step_x = a + (ptrdiff_t)d * w, step_y = b + (ptrdiff_t)e * w;
    const ptrdiff_t origin = c + (ptrdiff_t)f * w;
    for (int y = 0; y < out->height; y++) {
        uint8_t *dst = out->pixels + (size_t)y * out->width * 3;
        ptrdiff_t si = origin + y * step_y; /* index, not pointer: never points outside */
        for (int x = 0; x < out->width; x++, si += step_x) {
            const uint8_t *src = img->pixels + si * 3;
            dst[3 * x] = src[0];
            dst[3 * x + 1] = src[1];
            dst[3 * x + 2] = src[2];
        }
    }
    return out;
}
