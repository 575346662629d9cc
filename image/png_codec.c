/* PNG through libpng: decoding to RGB as Pillow's PngImagePlugin + convert("RGB") does, and
 * lossless 8-bit RGB encoding.
 *
 * Decoding reads the raw samples (no libpng transformations) and converts them here, because
 * Pillow's conversions are not libpng's: 16-bit RGB keeps the high byte (no rounding), 16-bit
 * gray is mode I;16 whose RGB conversion clips the value to 255, palette transparency and alpha
 * are dropped without compositing, indices past the palette read black.
 */
#include "dq_error.h"
#include "image_private.h"

#include <png.h>
#include <setjmp.h>
#include <string.h>

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len, pos;
    char msg[200];
    /* Owned buffers live here, not in locals, so they survive a longjmp unchanged. */
    DqImage *img;
    uint8_t *raw;
    gboolean pixels_done;
    size_t refused;           /* the largest allocation libpng asked for and was refused, or 0 */
    uint8_t palette[256 * 3]; /* entries past PLTE stay black, as in Pillow */
    GByteArray *exif;         /* the last eXIf chunk's data (png_exif_chunk_cb), or NULL */
} PngReader;

/* The most libpng may allocate at once. Its own needs are a few rows (8 MB at its width limit
 * of 10^6 pixels) and ancillary chunks (its 8 MB chunk limit). That chunk limit is a *benign*
 * error, which png_set_benign_errors (wanted for Pillow's tolerance of bad ancillary CRCs)
 * turns into a warning; a chunk header claiming 2 GB would then be allocated before the read
 * finds the file far shorter. Refusing here keeps a hostile header from costing memory. */
#define DQ_PNG_MAX_ALLOC ((size_t)64 << 20)

static png_voidp png_malloc_cb(png_structp png, png_alloc_size_t size) {
    if (size > DQ_PNG_MAX_ALLOC) {
        PngReader *r = png_get_mem_ptr(png);
        if (size > r->refused)
            r->refused = size;
        return NULL;
    }
    return g_try_malloc(size);
}

static void png_free_cb(png_structp png, png_voidp p) {
    g_free(p);
}

static void png_error_cb(png_structp png, png_const_charp msg) {
    PngReader *r = png_get_error_ptr(png);
    g_strlcpy(r->msg, msg, sizeof r->msg);
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    /* Pillow ignores what libpng only warns about (bad ancillary CRCs, odd chunks). */
}

static void png_read_cb(png_structp png, png_bytep out, size_t n) {
    PngReader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos)
        png_error(png, "file is truncated");
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

gboolean dq_image_is_png(const uint8_t *data, size_t len) {
    return len >= 8 && png_sig_cmp(data, 0, 8) == 0;
}

/* One raw libpng row (big-endian, packed sub-byte samples) -> RGB, as Pillow's unpackers
 * followed by convert("RGB"). One loop per format keeps the per-pixel work branch-free. */
static void png_row_to_rgb(const uint8_t *in, uint8_t *out, int width, int color_type, int depth,
                           const uint8_t *palette /* [256][3] */) {
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_PALETTE) {
        gboolean pal = color_type == PNG_COLOR_TYPE_PALETTE;
        if (depth == 16) { /* gray only: I;16 -> RGB clips, values above 255 become white */
            for (int x = 0; x < width; x++) {
                unsigned v16 = (unsigned)in[2 * x] << 8 | in[2 * x + 1];
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = (uint8_t)(v16 > 255 ? 255 : v16);
            }
            return;
        }
        /* Sub-byte gray scales to 0..255 ("1", L;2, L;4); palette indices do not. */
        int per_byte = 8 / depth, mask = (1 << depth) - 1;
        int scale = pal ? 1 : depth == 1 ? 255 : depth == 2 ? 0x55 : depth == 4 ? 0x11 : 1;
        for (int x = 0; x < width; x++) {
            unsigned v;
            if (depth == 8)
                v = in[x];
            else
                v = (unsigned)(in[x / per_byte] >> (8 - depth * (x % per_byte + 1)) & mask);
            if (pal) {
                memcpy(out + 3 * x, palette + 3 * v, 3);
            } else {
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = (uint8_t)(v * scale);
            }
        }
        return;
    }
    /* gray+alpha (2 samples), RGB (3), RGBA (4): alpha dropped, 16-bit keeps the high byte. */
    int spp = color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
              : color_type == PNG_COLOR_TYPE_RGB      ? 3
                                                      : 4;
    int bps = depth / 8;
    size_t pstride = (size_t)spp * bps;
    if (spp == 2) {
        for (int x = 0; x < width; x++)
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x * pstride];
    } else if (spp == 3 && bps == 1) {
        memcpy(out, in, (size_t)width * 3);
    } else {
        for (int x = 0; x < width; x++) {
            const uint8_t *p = in + x * pstride;
            out[3 * x] = p[0];
            out[3 * x + 1] = p[bps];
            out[3 * x + 2] = p[2 * bps];
        }
    }
}

/* eXIf chunks are read here, not by libpng: libpng drops one that does not start with "MM" or
 * "II", where Pillow keeps every one (PngStream.chunk_eXIf; Exif.load then strips "Exif\0\0"
 * prefixes, which some writers put there), and the last one read wins, as it overwrites
 * info["exif"], after the image data too. */
static int png_exif_chunk_cb(png_structp png, png_unknown_chunkp chunk) {
    if (memcmp(chunk->name, "eXIf", 4) != 0)
        return 0; /* not ours: libpng's default handling */
    PngReader *r = png_get_user_chunk_ptr(png);
    if (r->exif != NULL)
        g_byte_array_unref(r->exif);
    r->exif = g_byte_array_new();
    g_byte_array_append(r->exif, chunk->data, (guint)chunk->size);
    return 1;
}

/* The metadata as Pillow's info dict holds it once the file is read: every chunk, before or after
 * IDAT, overwrites its key, so of several the last one counts. info["exif"] is the last eXIf
 * chunk (stored with an "Exif\0\0" prefix, so even an empty one is there) and takes the place
 * of ImageMagick's "Raw profile type exif" text; XMP is the last "XML:com.adobe.xmp" text. */
static void png_collect_meta(png_structp png, png_infop info, DqImageMeta *meta) {
    PngReader *r = png_get_user_chunk_ptr(png);
    dq_image_meta_clear(meta);
    if (r->exif != NULL)
        meta->exif = g_byte_array_ref(r->exif);
    png_textp text = NULL;
    int ntext = 0;
    png_get_text(png, info, &text, &ntext);
    const png_text *xmp = NULL, *raw = NULL;
    for (int i = 0; i < ntext; i++) {
        if (text[i].text == NULL)
            continue;
        if (strcmp(text[i].key, "XML:com.adobe.xmp") == 0)
            xmp = &text[i];
        else if (strcmp(text[i].key, "Raw profile type exif") == 0)
            raw = &text[i];
    }
    if (xmp != NULL) {
        size_t len = xmp->compression > 0 ? xmp->itxt_length : xmp->text_length;
        meta->xmp = g_byte_array_new();
        g_byte_array_append(meta->xmp, (const guint8 *)xmp->text, len);
    }
    if (meta->exif == NULL && raw != NULL) {
        /* "\nexif\n   SIZE\nHEX HEX ...": Pillow skips three lines and reads the rest as hex,
         * ignoring whitespace. */
        size_t len = raw->compression > 0 ? raw->itxt_length : raw->text_length;
        const char *s = raw->text, *end = s + len;
        for (int lines = 0; lines < 3 && s < end; s++)
            if (*s == '\n')
                lines++;
        GByteArray *bytes = g_byte_array_new();
        int hi = -1;
        for (; s < end; s++) {
            if (g_ascii_isspace(*s))
                continue;
            int v = g_ascii_xdigit_value(*s);
            if (v < 0)
                break;
            if (hi < 0) {
                hi = v;
            } else {
                guint8 byte = (guint8)(hi << 4 | v);
                g_byte_array_append(bytes, &byte, 1);
                hi = -1;
            }
        }
        meta->exif = bytes;
    }
}

/* Everything the decoder changes after setjmp lives in *r (heap) or behind meta, so nothing
 * a longjmp could leave indeterminate is read afterwards. */
static DqImage *png_decode_with(PngReader *r, DqImageMeta *meta, GError **err) {
    const char *name = r->name;
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, r, png_error_cb,
                                               png_warning_cb, r, png_malloc_cb, png_free_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory starting the PNG decoder", name);
        return NULL;
    }
    if (setjmp(png_jmpbuf(png))) {
        if (r->pixels_done)
            goto done; /* damage after the image data (e.g. no IEND): Pillow ignores it too */
        if (r->refused > 0)
            dq_fail(err, DQ_ERR_FORMAT,
                    "%s: bad PNG: a chunk asks for %zu bytes, more than the %zu MiB allowed (%s)",
                    name, r->refused, DQ_PNG_MAX_ALLOC >> 20, r->msg);
        else
            dq_fail(err, DQ_ERR_FORMAT, "%s: bad PNG: %s", name, r->msg);
        goto fail;
    }
    png_set_read_fn(png, r, png_read_cb);
    png_set_benign_errors(png, 1);
    static const png_byte exif_chunk[] = "eXIf";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_ALWAYS, exif_chunk, 1);
    png_set_read_user_chunk_fn(png, r, png_exif_chunk_cb);
    png_read_info(png, info);

    png_uint_32 width = 0, height = 0;
    int depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(png, info, &width, &height, &depth, &color_type, &interlace, NULL, NULL);
    if ((long long)width * (long long)height > DQ_IMAGE_MAX_PIXELS) {
        dq_fail(err, DQ_ERR_LIMIT, "%s: PNG of %ux%u pixels exceeds the limit of %lld pixels", name,
                width, height, DQ_IMAGE_MAX_PIXELS);
        goto fail;
    }
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int nplte = 0;
        if (png_get_PLTE(png, info, &plte, &nplte) == 0 || plte == NULL) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: bad PNG: palette image without PLTE", name);
            goto fail;
        }
        for (int i = 0; i < nplte && i < 256; i++) {
            r->palette[3 * i] = plte[i].red;
            r->palette[3 * i + 1] = plte[i].green;
            r->palette[3 * i + 2] = plte[i].blue;
        }
    }

    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    r->img = dq_image_new((int)width, (int)height);
    /* Interlaced images need every raw row at once (Adam7 passes revisit them); others are
     * converted row by row through one buffer. */
    r->raw = g_try_malloc0(rowbytes * (passes > 1 ? height : 1));
    if (r->img == NULL || r->raw == NULL) {
        dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory for a %ux%u image", name, width, height);
        goto fail;
    }
    size_t out_stride = (size_t)width * 3;
    if (passes > 1) {
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < height; y++)
                png_read_row(png, r->raw + y * rowbytes, NULL);
        for (png_uint_32 y = 0; y < height; y++)
            png_row_to_rgb(r->raw + y * rowbytes, r->img->pixels + y * out_stride, (int)width,
                           color_type, depth, r->palette);
    } else {
        for (png_uint_32 y = 0; y < height; y++) {
            png_read_row(png, r->raw, NULL);
            png_row_to_rgb(r->raw, r->img->pixels + y * out_stride, (int)width, color_type, depth,
                           r->palette);
        }
    }
    r->pixels_done = TRUE;
    /* Chunks after IDAT may carry eXIf or XMP. */
    png_read_end(png, info);

done:
    png_collect_meta(png, info, meta);
    png_destroy_read_struct(&png, &info, NULL);
    DqImage *img = r->img;
    r->img = NULL;
    return img;

fail:
    png_destroy_read_struct(&png, &info, NULL);
    return NULL;
}

DqImage *dq_png_decode(const uint8_t *data, size_t len, const char *name, DqImageMeta *meta,
                       GError **err) {
    PngReader *r = g_new0(PngReader, 1);
    r->name = name;
    r->data = data;
    r->len = len;
    DqImage *img = png_decode_with(r, meta, err);
    dq_image_free(r->img);
    g_free(r->raw);
    if (r->exif != NULL)
        g_byte_array_unref(r->exif);
    g_free(r);
    return img;
}

/* ---- encoding ---- */

typedef struct {
    GByteArray *out;
    char msg[200];
} PngWriter;

static void png_write_error_cb(png_structp png, png_const_charp msg) {
    PngWriter *w = png_get_error_ptr(png);
    g_strlcpy(w->msg, msg, sizeof w->msg);
    png_longjmp(png, 1);
}

static void png_write_cb(png_structp png, png_bytep data, size_t n) {
    PngWriter *w = png_get_io_ptr(png);
    g_byte_array_append(w->out, data, (guint)n);
}

static void png_flush_cb(png_structp png) {}

GBytes *dq_image_encode_png(const DqImage *img, GError **err) {
    if (img == NULL || img->width <= 0 || img->height <= 0 || img->pixels == NULL) {
        dq_fail(err, DQ_ERR_ARGS, "cannot encode an empty image as PNG");
        return NULL;
    }
    PngWriter w = {.out = g_byte_array_new()};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_write_error_cb, png_warning_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (info == NULL) {
        png_destroy_write_struct(&png, NULL);
        g_byte_array_unref(w.out);
        dq_fail(err, DQ_ERR_LIMIT, "out of memory starting the PNG encoder");
        return NULL;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        g_byte_array_unref(w.out);
        dq_fail(err, DQ_ERR_IO, "PNG encoding failed: %s", w.msg);
        return NULL;
    }
    png_set_write_fn(png, &w, png_write_cb, png_flush_cb);
    /* Page images are mostly flat paper: zlib level 3 with the Up filter alone encodes a
     * 1978x2560 page about 3x faster than libpng's defaults (level 6, adaptive filtering) for
     * a file within 1% of the size; photos grow ~10%. Lossless either way. */
    png_set_compression_level(png, 3);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)img->width * 3;
    for (int y = 0; y < img->height; y++)
        png_write_row(png, img->pixels + (size_t)y * stride);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return g_byte_array_free_to_bytes(w.out);
}

gboolean dq_image_write_png(const DqImage *img, const char *path, GError **err) {
    GBytes *bytes = dq_image_encode_png(img, err);
    if (bytes == NULL) {
        dq_error_prefix(err, "%s", path);
        return FALSE;
    }
    gsize n = 0;
    const char *data = g_bytes_get_data(bytes, &n);
    GError *io = NULL;
    gboolean ok = g_file_set_contents(path, data, (gssize)n, &io);
    g_bytes_unref(bytes);
    if (!ok) {
        dq_fail(err, DQ_ERR_IO, "%s: cannot write PNG: %s", path, io->message);
        g_error_free(io);
    }
    return ok;
}
