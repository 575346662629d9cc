/* EXIF / XMP orientation, resolved as Pillow 12's Image.getexif(), and ImageOps.exif_transpose.
 *
 * Only IFD0's Orientation tag (274) matters. Pillow raises on EXIF that is not a TIFF
 * structure; here unreadable metadata simply means "no orientation", since a broken tag should
 * not lose a page. Which entries count and how their values compare is Pillow's, down to the
 * tag's type (exif_orientation).
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

static uint64_t rd64(const uint8_t *p, gboolean big) {
    uint64_t hi = rd32(p, big), lo = rd32(p + 4, big);
    return big ? hi << 32 | lo : lo << 32 | hi;
}

/* What Pillow 12's TiffImagePlugin.ImageFileDirectory_v2 makes of an entry's first value, as
 * the orientation ImageOps.exif_transpose acts on (its dict lookup: 2..8 by equality, so 6,
 * 6.0 and the rational 12/2 are all 6), 0 for a value it does not act on: BYTE and UNDEFINED
 * load as bytes, ASCII as str, neither equal to an int; numbers other than 2..8. Orientation is
 * a tag of one value, so of several the first counts (Pillow warns and truncates). */
static int entry_orientation(unsigned type, const uint8_t *v, gboolean big) {
    double x;
    switch (type) {
    case 3: /* SHORT */
        x = rd16(v, big);
        break;
    case 4:  /* LONG */
    case 13: /* IFD: loaded as a LONG */
        x = rd32(v, big);
        break;
    case 6: /* SIGNED BYTE */
        x = (int8_t)v[0];
        break;
    case 8: /* SIGNED SHORT */
        x = (int16_t)rd16(v, big);
        break;
    case 9: /* SIGNED LONG */
        x = (int32_t)rd32(v, big);
        break;
    case 16: /* LONG8 */
    {
        uint64_t u = rd64(v, big);
        x = u > 8 ? 0 : (double)u;
        break;
    }
    case 5:  /* RATIONAL: IFDRational(num, den) == k exactly when num == k * den (den 0: nan) */
    case 10: /* SIGNED RATIONAL */
    {
        int64_t num = type == 5 ? (int64_t)rd32(v, big) : (int64_t)(int32_t)rd32(v, big);
        int64_t den = type == 5 ? (int64_t)rd32(v + 4, big) : (int64_t)(int32_t)rd32(v + 4, big);
        if (den == 0 || num % den != 0)
            return 0;
        x = (double)num / (double)den; /* exact: den divides num */
        break;
    }
    case 11: /* FLOAT */
    {
        uint32_t bits = rd32(v, big);
        float f;
        memcpy(&f, &bits, sizeof f);
        x = f;
        break;
    }
    case 12: /* DOUBLE */
    {
        uint64_t bits = rd64(v, big);
        double d;
        memcpy(&d, &bits, sizeof d);
        x = d;
        break;
    }
    default: /* 1 BYTE, 2 ASCII, 7 UNDEFINED */
        return 0;
    }
    return x >= 2 && x <= 8 && x == (int)x ? (int)x : 0;
}

/* Bytes per value of the TIFF types Pillow loads (_load_dispatch); 0 for a type it skips as if
 * the entry were not there. */
static unsigned type_size(unsigned type) {
    switch (type) {
    case 1:
    case 2:
    case 6:
    case 7:
        return 1;
    case 3:
    case 8:
        return 2;
    case 4:
    case 9:
    case 11:
    case 13:
        return 4;
    case 5:
    case 10:
    case 12:
    case 16:
        return 8;
    default:
        return 0;
    }
}

/* IFD0's Orientation in a TIFF-structured blob as Pillow's Image.getexif() reads it: -1 when
 * the tag is absent (then XMP may say), 0 when present with a value exif_transpose does not act
 * on, else 2..8 (1 reads as 0: nothing to do either way). Pillow's loader, mirrored:
 *  - headers MM\0*, II*\0 and the swapped MM*\0, II\0* (PREFIXES); BigTIFF is not read here;
 *  - entries of an unknown type, with count 0, or whose value lies past the blob's end are
 *    skipped; an entry that does not fit, or a value past the end, ends the IFD (OSError, the
 *    tags read so far kept);
 *  - a tag given twice: the last entry read wins. */
static int exif_orientation(const uint8_t *d, size_t len) {
    /* Exif.load strips any number of "Exif\0\0" prefixes. */
    while (len >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
        d += 6;
        len -= 6;
    }
    if (len < 8)
        return -1;
    gboolean big;
    if (memcmp(d, "MM\0*", 4) == 0 || memcmp(d, "MM*\0", 4) == 0)
        big = TRUE;
    else if (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "II\0*", 4) == 0)
        big = FALSE;
    else
        return -1;
    uint32_t ifd = rd32(d + 4, big);
    if (ifd > len || len - ifd < 2)
        return -1;
    unsigned n = rd16(d + ifd, big);
    int found = -1;
    for (unsigned i = 0; i < n; i++) {
        size_t at = (size_t)ifd + 2 + (size_t)i * 12;
        if (at + 12 > len)
            break;
        const uint8_t *e = d + at;
        unsigned type = rd16(e + 2, big), unit = type_size(type);
        uint32_t count = rd32(e + 4, big);
        if (unit == 0)
            continue;
        uint64_t size = (uint64_t)count * unit;
        const uint8_t *value = e + 8;
        if (size > 4) {
            uint32_t off = rd32(e + 8, big);
            if (off > len || len - off < size)
                break;
            value = d + off;
        }
        if (rd16(e, big) != 274 || size == 0)
            continue;
        found = entry_orientation(type, value, big);
    }
    return found;
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
    int o = -1;
    if (meta->exif != NULL)
        o = exif_orientation(meta->exif->data, meta->exif->len);
    /* getexif consults XMP only when EXIF has no Orientation tag at all */
    if (o < 0 && meta->xmp != NULL)
        o = xmp_orientation(meta->xmp->data, meta->xmp->len);
    return o < 1 ? 1 : o;
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
    DqImage *out = swap ? dq_image_new_uninit(h, w) : dq_image_new_uninit(w, h);
    if (out == NULL)
        return NULL;
    /* Offsets in pixels: one step along an output row, one step down an output column. */
    const ptrdiff_t step_x = a + (ptrdiff_t)d * w, step_y = b + (ptrdiff_t)e * w;
    const ptrdiff_t origin = c + (ptrdiff_t)f * w;
    /* A transposition walks the source down its columns: row by row over the whole output, each
     * pixel read is a cache (and TLB) miss, 5x slower than a flip on a 75-megapixel photo. In
     * 64x64 tiles the source rows a tile touches stay cached. Flips read along rows: one tile. */
    const int tile_w = swap ? 64 : out->width, tile_h = swap ? 64 : out->height;
    for (int y0 = 0; y0 < out->height; y0 += tile_h) {
        const int y1 = MIN(out->height, y0 + tile_h);
        for (int x0 = 0; x0 < out->width; x0 += tile_w) {
            const int x1 = MIN(out->width, x0 + tile_w);
            for (int y = y0; y < y1; y++) {
                uint8_t *dst = out->pixels + ((size_t)y * out->width + (size_t)x0) * 3;
                /* index, not pointer: never points outside */
                ptrdiff_t si = origin + y * step_y + x0 * step_x;
                for (int x = x0; x < x1; x++, si += step_x, dst += 3) {
                    const uint8_t *src = img->pixels + si * 3;
                    dst[0] = src[0];
                    dst[1] = src[1];
                    dst[2] = src[2];
                }
            }
        }
    }
    return out;
}
