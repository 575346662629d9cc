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
#include <stdarg.h>
#include <string.h>
#include <zlib.h>

/* Pillow's PngImagePlugin limits: MAX_TEXT_CHUNK (ImageFile.SAFEBLOCK) bounds what one zTXt,
 * iTXt or iCCP chunk may decompress to, MAX_TEXT_MEMORY the text of all text chunks together.
 * Past either, Image.open or load() raises ValueError (transformers leaves
 * ImageFile.LOAD_TRUNCATED_IMAGES false), so the image is refused, wherever the chunk is. */
#define PILLOW_MAX_TEXT_CHUNK  ((size_t)1 << 20)
#define PILLOW_MAX_TEXT_MEMORY (64 * PILLOW_MAX_TEXT_CHUNK)
/* ImageFile.decodermaxblock: load() hands the zip decoder an IDAT chunk's data in pieces of at
 * most this many bytes, which decides where a stream that ends early is noticed. */
#define PILLOW_DECODER_BLOCK ((size_t)65536)

#define CHUNK_IDAT 0x49444154u /* "IDAT" as libpng's png_get_io_chunk_type gives it */

typedef struct {
    size_t offset, len;
} ByteRange;

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len, pos;
    char msg[200];
    /* Owned buffers live here, not in locals, so they survive a longjmp unchanged. */
    DqImage *img;
    uint8_t *raw;
    gboolean pixels_done;
    gboolean fatal;           /* msg is an error Pillow raises even after the image data */
    size_t refused;           /* the largest allocation libpng asked for and was refused, or 0 */
    uint8_t palette[256 * 3]; /* entries past PLTE stay black, as in Pillow */
    /* The metadata as Pillow's info dict holds it (png_chunk_cb): the last of each. */
    GByteArray *exif;     /* info["exif"]: eXIf data, or a tEXt "exif" value */
    GByteArray *xmp;      /* info["XML:com.adobe.xmp"] */
    GByteArray *xmp_itxt; /* info["xmp"]: an iTXt XMP's bytes, even when not UTF-8 */
    GByteArray *raw_exif; /* info["Raw profile type exif"] */
    size_t text_memory;   /* PngStream.text_memory */
    /* The image data as libpng read it, for judging a stream that ends early as Pillow does. */
    GArray *idat;        /* ByteRange: one per IDAT chunk (its bytes read so far) */
    GByteArray *scratch; /* decompressed text */
    uint32_t width, height;
    int color_type, depth, bits_per_pixel, interlaced;
    size_t rowbytes;
    gboolean in_rows;
    uint32_t rows_done; /* rows read and converted (not interlaced) */
} PngReader;

/* The most libpng may allocate at once. Its own needs are a few rows (8 MB at its width limit
 * of 10^6 pixels) and ancillary chunks, cached whole up to the same size (png_set_chunk_malloc_max:
 * Pillow reads text chunks of any size, but refuses more than 64 MiB of text). That chunk limit
 * is a *benign* error, which png_set_benign_errors turns into a warning; a chunk header claiming
 * 2 GB would then be allocated before the read finds the file far shorter. Refusing here keeps
 * a hostile header from costing memory. */
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
    if (msg != r->msg)
        g_strlcpy(r->msg, msg, sizeof r->msg);
    png_longjmp(png, 1);
}

/* An error Pillow raises wherever the chunk is, even after the image data. */
G_GNUC_PRINTF(2, 3) G_GNUC_NORETURN static void png_fatal(png_structp png, const char *fmt, ...) {
    PngReader *r = png_get_error_ptr(png);
    va_list ap;
    va_start(ap, fmt);
    g_vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    r->fatal = TRUE;
    png_error(png, r->msg);
}

static gboolean is_text_chunk(png_uint_32 type) {
    return type == 0x74455874u /* tEXt */ || type == 0x7A545874u /* zTXt */ ||
           type == 0x69545874u /* iTXt */ || type == 0x69434350u /* iCCP */;
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    /* Pillow ignores what libpng only warns about (odd chunks), with one exception: a text
     * chunk too large to be read at all (over DQ_PNG_MAX_ALLOC) holds more text than Pillow's
     * MAX_TEXT_MEMORY, or decompresses past MAX_TEXT_CHUNK: Pillow refuses it. */
    if (strstr(msg, "exceeds memory limits") != NULL && is_text_chunk(png_get_io_chunk_type(png)))
        png_fatal(png, "a text chunk larger than %zu MiB (Pillow allows %zu MiB of text)",
                  DQ_PNG_MAX_ALLOC >> 20, PILLOW_MAX_TEXT_MEMORY >> 20);
}

static void png_read_cb(png_structp png, png_bytep out, size_t n) {
    PngReader *r = png_get_io_ptr(png);
    int loc = (int)(png_get_io_state(png) & PNG_IO_MASK_LOC);
    gboolean idat = loc == PNG_IO_CHUNK_DATA && png_get_io_chunk_type(png) == CHUNK_IDAT;
    size_t got = MIN(n, r->len - r->pos);
    if (idat && got > 0) {
        ByteRange *last =
            r->idat->len > 0 ? &g_array_index(r->idat, ByteRange, r->idat->len - 1) : NULL;
        if (last != NULL && last->offset + last->len == r->pos) {
            last->len += got;
        } else {
            ByteRange range = {r->pos, got};
            g_array_append_val(r->idat, range);
        }
    }
    if (got < n) {
        r->pos = r->len;
        /* After the image data Pillow reads CRCs and chunk headers without checking that they
         * are all there, and skips what is left of the image data, but a chunk cut short is
         * "Truncated File Read". */
        if (r->pixels_done && loc == PNG_IO_CHUNK_DATA && !idat)
            png_fatal(png, "file is truncated inside a chunk after the image data");
        png_error(png, "file is truncated");
    }
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

static void replace_bytes(GByteArray **slot, const uint8_t *data, size_t len) {
    if (*slot != NULL)
        g_byte_array_unref(*slot);
    *slot = g_byte_array_sized_new((guint)len);
    g_byte_array_append(*slot, data, (guint)len);
}

/* PngImagePlugin's _safe_zlib_decompress: zlib.decompressobj().decompress(data, MAX_TEXT_CHUNK),
 * an error when input is left over once that much is out (unconsumed_tail), the output so far
 * when the stream is merely cut short. */
typedef enum {
    PILLOW_INFLATE_OK,
    PILLOW_INFLATE_TOO_LARGE,
    PILLOW_INFLATE_ZLIB_ERROR
} PillowInflate;

static PillowInflate pillow_inflate(const uint8_t *in, size_t len, GByteArray *out) {
    z_stream zs = {.next_in = (Bytef *)in, .avail_in = (uInt)len};
    if (inflateInit(&zs) != Z_OK)
        return PILLOW_INFLATE_ZLIB_ERROR;
    PillowInflate result = PILLOW_INFLATE_OK;
    /* The buffer grows as Python's does: most text is small, and a cap met at once is cheap. */
    size_t cap = MIN(PILLOW_MAX_TEXT_CHUNK, MAX(len * 4, (size_t)4096));
    for (;;) {
        g_byte_array_set_size(out, (guint)cap);
        zs.next_out = out->data + zs.total_out;
        zs.avail_out = (uInt)(cap - zs.total_out);
        int ret = inflate(&zs, Z_SYNC_FLUSH);
        if (ret != Z_OK && ret != Z_BUF_ERROR && ret != Z_STREAM_END) {
            result = PILLOW_INFLATE_ZLIB_ERROR;
            break;
        }
        if (ret == Z_STREAM_END || zs.avail_out > 0)
            break; /* the end, or all the input is in: a stream cut short is no error */
        if (cap == PILLOW_MAX_TEXT_CHUNK) {
            if (zs.avail_in > 0)
                result = PILLOW_INFLATE_TOO_LARGE;
            break;
        }
        cap = MIN(PILLOW_MAX_TEXT_CHUNK, cap * 2);
    }
    g_byte_array_set_size(out, (guint)zs.total_out);
    inflateEnd(&zs);
    return result;
}

/* Python's bytes.decode("utf-8", "strict"): the number of characters, or -1 when not UTF-8.
 * NULs are characters there, where g_utf8_validate stops at them. */
static gssize pillow_utf8_chars(const uint8_t *s, size_t len) {
    gssize chars = 0;
    const uint8_t *p = s, *end = s + len;
    while (p < end) {
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        const uint8_t *stop = nul != NULL ? nul : end;
        if (!g_utf8_validate((const gchar *)p, stop - p, NULL))
            return -1;
        chars += g_utf8_strlen((const gchar *)p, stop - p) + (nul != NULL);
        p = nul != NULL ? nul + 1 : end;
    }
    return chars;
}

/* PngStream.check_text_memory: every text chunk's value counts, in characters. */
static void pillow_count_text(png_structp png, PngReader *r, size_t chars) {
    r->text_memory += chars;
    if (r->text_memory > PILLOW_MAX_TEXT_MEMORY)
        png_fatal(png,
                  "more than %zu MiB of text in tEXt/zTXt/iTXt chunks (Pillow's "
                  "MAX_TEXT_MEMORY)",
                  PILLOW_MAX_TEXT_MEMORY >> 20);
}

static void pillow_inflate_or_fail(png_structp png, const char *type, const uint8_t *in, size_t len,
                                   GByteArray *out, gboolean *zlib_error) {
    PillowInflate got = pillow_inflate(in, len, out);
    if (got == PILLOW_INFLATE_TOO_LARGE)
        png_fatal(png, "%s %s chunk decompresses to more than %zu MiB (Pillow's MAX_TEXT_CHUNK)",
                  type[0] == 'i' ? "an" : "a", type, PILLOW_MAX_TEXT_CHUNK >> 20);
    *zlib_error = got == PILLOW_INFLATE_ZLIB_ERROR;
}

/* What PngStream's chunk_tEXt, chunk_zTXt, chunk_iTXt do with a text chunk's value under `key`:
 * info[key] = value, and the keys that carry orientation kept here. */
static void pillow_text_value(PngReader *r, const uint8_t *key, size_t key_len,
                              const uint8_t *value, size_t len) {
    if (key_len == 17 && memcmp(key, "XML:com.adobe.xmp", 17) == 0)
        replace_bytes(&r->xmp, value, len);
    else if (key_len == 21 && memcmp(key, "Raw profile type exif", 21) == 0)
        replace_bytes(&r->raw_exif, value, len);
}

/* Text, ICC profiles and eXIf are read here, not by libpng (which calls this for them and for
 * the chunks it does not know), to follow PngImagePlugin's rules:
 * which chunks count against its text limits, what it refuses (a decompression past
 * MAX_TEXT_CHUNK, more than MAX_TEXT_MEMORY of text, an unknown compression method), what it
 * skips (a damaged compressed stream, an iTXt that is not UTF-8), and the metadata as its info
 * dict ends up: every chunk, before or after IDAT, overwrites its key, so the last one counts.
 * libpng instead inflates every compressed text whole (twice) and drops what it finds odd, such
 * as an eXIf not starting with "MM" or "II" that Pillow keeps (Exif.load then strips an
 * "Exif\0\0" prefix, which some writers put there). The chunk's bytes are whole and their CRC
 * checked by libpng before this is called. */
static int png_chunk_cb(png_structp png, png_unknown_chunkp chunk) {
    PngReader *r = png_get_user_chunk_ptr(png);
    const uint8_t *s = chunk->data != NULL ? chunk->data : (const uint8_t *)"";
    size_t len = chunk->size;
    const uint8_t *nul = memchr(s, 0, len);
    /* s.split(b"\0", 1), or (s, b"") without a NUL */
    size_t key_len = nul != NULL ? (size_t)(nul - s) : len;
    const uint8_t *v = nul != NULL ? nul + 1 : s + len;
    size_t v_len = (size_t)(s + len - v);
    const char *name = (const char *)chunk->name;
    if (memcmp(name, "eXIf", 4) == 0) {
        replace_bytes(&r->exif, s, len);
    } else if (memcmp(name, "tEXt", 4) == 0) {
        if (key_len > 0) {
            if (key_len == 4 && memcmp(s, "exif", 4) == 0)
                replace_bytes(&r->exif, v, v_len); /* info["exif"] is the value's bytes */
            pillow_text_value(r, s, key_len, v, v_len);
            pillow_count_text(png, r, v_len);
        }
    } else if (memcmp(name, "zTXt", 4) == 0) {
        int method = v_len > 0 ? v[0] : 0;
        if (method != 0)
            png_fatal(png, "unknown compression method %d in a zTXt chunk", method);
        GByteArray *text = r->scratch; /* in *r: a longjmp may leave from here */
        gboolean bad = FALSE;
        pillow_inflate_or_fail(png, "zTXt", v + (v_len > 0), v_len - (v_len > 0), text, &bad);
        if (bad)
            g_byte_array_set_size(text, 0); /* zlib.error: the value is b"" */
        if (key_len > 0) {
            pillow_text_value(r, s, key_len, text->data, text->len);
            pillow_count_text(png, r, text->len);
        }
    } else if (memcmp(name, "iTXt", 4) == 0) {
        /* keyword \0 flag method lang \0 translated keyword \0 text; anything short of that
         * is skipped */
        if (nul == NULL || v_len < 2)
            return 1;
        int flag = v[0], method = v[1];
        const uint8_t *lang = v + 2, *end = s + len;
        const uint8_t *lang_end = memchr(lang, 0, (size_t)(end - lang));
        const uint8_t *tk = lang_end != NULL ? lang_end + 1 : NULL;
        const uint8_t *tk_end = tk != NULL ? memchr(tk, 0, (size_t)(end - tk)) : NULL;
        if (tk_end == NULL)
            return 1;
        const uint8_t *text = tk_end + 1;
        size_t text_len = (size_t)(end - text);
        if (flag != 0) {
            if (method != 0)
                return 1;
            gboolean bad = FALSE;
            pillow_inflate_or_fail(png, "iTXt", text, text_len, r->scratch, &bad);
            if (bad)
                return 1;
            text = r->scratch->data;
            text_len = r->scratch->len;
        }
        if (key_len == 17 && memcmp(s, "XML:com.adobe.xmp", 17) == 0)
            replace_bytes(&r->xmp_itxt, text, text_len);
        gssize chars = pillow_utf8_chars(text, text_len);
        if (chars >= 0 && pillow_utf8_chars(lang, (size_t)(lang_end - lang)) >= 0 &&
            pillow_utf8_chars(tk, (size_t)(tk_end - tk)) >= 0) {
            pillow_text_value(r, s, key_len, text, text_len);
            pillow_count_text(png, r, (size_t)chars);
        }
    } else if (memcmp(name, "iCCP", 4) == 0) {
        /* s.find(b"\0") is -1 without a NUL: the method is then s[0] */
        size_t at = nul != NULL ? key_len + 1 : 0;
        if (at >= len)
            png_fatal(png, "iCCP chunk without a compression method");
        if (s[at] != 0)
            png_fatal(png, "unknown compression method %d in an iCCP chunk", s[at]);
        gboolean bad = FALSE; /* a damaged profile is dropped: docqa ignores profiles anyway */
        pillow_inflate_or_fail(png, "iCCP", s + at + 1, len - at - 1, r->scratch, &bad);
    }
    /* Any other chunk libpng does not know is skipped, as Pillow skips it, critical or not. */
    return 1;
}

/* The metadata Pillow's Image.getexif() reads: info["exif"], else "Raw profile type exif"
 * (ImageMagick's hex dump); for XMP, info["XML:com.adobe.xmp"], else (when missing or empty)
 * info["xmp"], which an iTXt sets even when its text is not UTF-8. */
static void png_collect_meta(PngReader *r, DqImageMeta *meta) {
    dq_image_meta_clear(meta);
    if (r->exif != NULL)
        meta->exif = g_byte_array_ref(r->exif);
    if (r->xmp != NULL && r->xmp->len > 0)
        meta->xmp = g_byte_array_ref(r->xmp);
    else if (r->xmp_itxt != NULL && r->xmp_itxt->len > 0)
        meta->xmp = g_byte_array_ref(r->xmp_itxt);
    if (meta->exif == NULL && r->raw_exif != NULL) {
        /* "\nexif\n   SIZE\nHEX HEX ...": Pillow skips three lines and reads the rest as hex,
         * ignoring whitespace. */
        const char *t = (const char *)r->raw_exif->data, *end = t + r->raw_exif->len;
        for (int lines = 0; lines < 3 && t < end; t++)
            if (*t == '\n')
                lines++;
        GByteArray *bytes = g_byte_array_new();
        int hi = -1;
        for (; t < end; t++) {
            if (g_ascii_isspace(*t))
                continue;
            int x = g_ascii_xdigit_value(*t);
            if (x < 0)
                break;
            if (hi < 0) {
                hi = x;
            } else {
                guint8 byte = (guint8)(hi << 4 | x);
                g_byte_array_append(bytes, &byte, 1);
                hi = -1;
            }
        }
        meta->exif = bytes;
    }
}

/* Pillow's zip decoder (libImaging/ZipDecode.c) run over the image data as libpng read it, to
 * tell whether Pillow would give an image where libpng stops with "Not enough image data" or
 * "file is truncated". The decoder takes whole rows (filter byte + row_len bytes) from zlib and
 * ends the image, successfully, when the last row is in *or* when zlib reports the end of the
 * stream together with a whole row: the rows after it stay as Image.core.new left them, zero
 * (their check is commented out in Pillow's source). Any other ending is an error: a zlib error
 * ("broken data stream"), a filter byte past 4 ("unrecognized data stream contents"), or data
 * that runs out first, the stream cut short or ending inside a row ("image file is truncated").
 * Returns the number of rows Pillow decodes (its row sequence, Adam7 pass by pass for an
 * interlaced image), or -1 with *why set when it raises. */
static const int ADAM7_OFFSET[] = {7, 3, 3, 1, 1, 0, 0}, ADAM7_ROW0[] = {0, 0, 4, 0, 2, 0, 1},
                 ADAM7_DX[] = {8, 8, 4, 4, 2, 2, 1}, ADAM7_DY[] = {8, 8, 8, 4, 4, 2, 2};

static size_t pillow_row_len(const PngReader *r, int pass) {
    size_t pixels =
        r->interlaced ? (r->width + (size_t)ADAM7_OFFSET[pass]) / ADAM7_DX[pass] : r->width;
    return (pixels * (size_t)r->bits_per_pixel + 7) / 8;
}

static long long pillow_idat_rows(const PngReader *r, const char **why) {
    z_stream zs = {0};
    if (inflateInit(&zs) != Z_OK) {
        *why = "out of memory";
        return -1;
    }
    /* A whole image row is the longest any pass has. */
    uint8_t *row = g_malloc(((size_t)r->width * (size_t)r->bits_per_pixel + 7) / 8 + 1);
    size_t row_len = pillow_row_len(r, 0), have = 0;
    long long y = 0, rows = 0;
    int pass = 0;
    *why = "image file is truncated";
    for (guint c = 0; c < r->idat->len; c++) {
        const ByteRange *chunk = &g_array_index(r->idat, ByteRange, c);
        for (size_t off = 0; off < chunk->len; off += PILLOW_DECODER_BLOCK) {
            zs.next_in = (Bytef *)r->data + chunk->offset + off;
            zs.avail_in = (uInt)MIN(PILLOW_DECODER_BLOCK, chunk->len - off);
            while (zs.avail_in > 0) {
                zs.next_out = row + have;
                zs.avail_out = (uInt)(row_len + 1 - have);
                int ret = inflate(&zs, Z_NO_FLUSH);
                if (ret < 0) {
                    *why = "broken data stream";
                    goto fail;
                }
                have = row_len + 1 - zs.avail_out;
                if (have < row_len + 1)
                    break; /* more input needed */
                if (row[0] > 4) {
                    *why = "unrecognized data stream contents (a row's filter type)";
                    goto fail;
                }
                rows++;
                have = 0;
                if (!r->interlaced) {
                    y++;
                } else {
                    y += ADAM7_DY[pass];
                    while (y >= r->height || row_len == 0) {
                        if (++pass == 7) {
                            y = r->height;
                            break;
                        }
                        y = ADAM7_ROW0[pass];
                        row_len = pillow_row_len(r, pass);
                    }
                }
                if (y >= r->height || ret == Z_STREAM_END)
                    goto done;
            }
        }
    }
fail:
    rows = -1;
done:
    inflateEnd(&zs);
    g_free(row);
    return rows;
}

/* Where libpng gave up inside the image data: the image Pillow gives, when it gives one (rows
 * libpng did not deliver are zero samples, as Pillow leaves them, e.g. palette entry 0). */
static gboolean png_short_image_data(PngReader *r) {
    const char *why = NULL;
    long long rows = pillow_idat_rows(r, &why);
    if (rows < 0) {
        char libpng_msg[sizeof r->msg];
        g_strlcpy(libpng_msg, r->msg, sizeof libpng_msg);
        g_snprintf(r->msg, sizeof r->msg, "%s (%s)", libpng_msg, why);
        return FALSE;
    }
    size_t stride = (size_t)r->width * 3;
    if (r->interlaced) {
        /* Passes libpng finished are in r->raw; the rest is still zero. */
        for (uint32_t y = 0; y < r->height; y++)
            png_row_to_rgb(r->raw + y * r->rowbytes, r->img->pixels + y * stride, (int)r->width,
                           r->color_type, r->depth, r->palette);
        return TRUE;
    }
    if (rows != r->rows_done)
        return FALSE; /* libpng stopped elsewhere, for its own reason: keep its message */
    memset(r->raw, 0, r->rowbytes);
    for (uint32_t y = r->rows_done; y < r->height; y++)
        png_row_to_rgb(r->raw, r->img->pixels + y * stride, (int)r->width, r->color_type, r->depth,
                       r->palette);
    return TRUE;
}

/* Where libpng gave up (it longjmps back to png_decode_with): TRUE when there is an image all
 * the same, as Pillow would give one; else FALSE with err saying why. */
static gboolean png_recover(PngReader *r, GError **err) {
    /* Damage after the image data (no IEND, a bad CRC, a cut header) is ignored, as Pillow
     * ignores it, but not what Pillow refuses there too (text past its limits). */
    if (r->pixels_done && !r->fatal)
        return TRUE;
    /* Image data that ends early may still be an image to Pillow. Chunks after it are then
     * not read (libpng cannot go on): their metadata is lost where Pillow would read it. */
    if (r->in_rows && !r->fatal && png_short_image_data(r)) {
        r->pixels_done = TRUE;
        return TRUE;
    }
    if (r->refused > 0)
        dq_fail(err, DQ_ERR_FORMAT,
                "%s: bad PNG: a chunk asks for %zu bytes, more than the %zu MiB allowed (%s)",
                r->name, r->refused, DQ_PNG_MAX_ALLOC >> 20, r->msg);
    else
        dq_fail(err, DQ_ERR_FORMAT, "%s: bad PNG: %s", r->name, r->msg);
    return FALSE;
}

/* libpng told to read as Pillow reads: from r's bytes, its CRC checks, its allocation limit,
 * the metadata chunks handed to png_chunk_cb. */
static void png_read_like_pillow(png_structp png, PngReader *r) {
    png_set_read_fn(png, r, png_read_cb);
    png_set_benign_errors(png, 1);
    /* Until the image data Pillow checks every chunk's CRC (ChunkStream.crc), ancillary ones too;
     * from the first IDAT on it checks none (see png_decode_header). */
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    png_set_chunk_malloc_max(png, DQ_PNG_MAX_ALLOC);
    static const png_byte own_chunks[] = "eXIf\0tEXt\0zTXt\0iTXt\0iCCP";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_ALWAYS, own_chunks, 5);
    png_set_read_user_chunk_fn(png, r, png_chunk_cb);
}

/* A palette image's PLTE, into r->palette. */
static gboolean png_copy_palette(PngReader *r, png_structp png, png_infop info, GError **err) {
    png_colorp plte = NULL;
    int nplte = 0;
    if (png_get_PLTE(png, info, &plte, &nplte) == 0 || plte == NULL)
        return dq_fail(err, DQ_ERR_FORMAT, "%s: bad PNG: palette image without PLTE", r->name);
    for (int i = 0; i < nplte && i < 256; i++) {
        r->palette[3 * i] = plte[i].red;
        r->palette[3 * i + 1] = plte[i].green;
        r->palette[3 * i + 2] = plte[i].blue;
    }
    return TRUE;
}

/* The chunks up to the first IDAT: the image's size (within the pixel limit), its layout, and
 * the palette. */
static gboolean png_decode_header(PngReader *r, png_structp png, png_infop info, GError **err) {
    png_read_info(png, info);
    /* libpng has read the first IDAT's header: Pillow reads the CRCs of the image data and
     * of everything after it without checking them. */
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    png_uint_32 width = 0, height = 0;
    int depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(png, info, &width, &height, &depth, &color_type, &interlace, NULL, NULL);
    if ((long long)width * (long long)height > DQ_IMAGE_MAX_PIXELS)
        return dq_fail(err, DQ_ERR_LIMIT,
                       "%s: PNG of %ux%u pixels exceeds the limit of %lld pixels", r->name, width,
                       height, DQ_IMAGE_MAX_PIXELS);
    r->width = width;
    r->height = height;
    r->color_type = color_type;
    r->depth = depth;
    return color_type != PNG_COLOR_TYPE_PALETTE || png_copy_palette(r, png, info, err);
}

/* libpng set to deliver rows, and the image and row buffers they go to: the number of passes
 * (7 for an interlaced image), or 0 when out of memory. */
static int png_prepare_rows(PngReader *r, png_structp png, png_infop info, GError **err) {
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    r->bits_per_pixel = r->depth * png_get_channels(png, info);
    r->interlaced = passes > 1;
    r->rowbytes = png_get_rowbytes(png, info);
    r->img = dq_image_new((int)r->width, (int)r->height);
    /* Interlaced images need every raw row at once (Adam7 passes revisit them); others are
     * converted row by row through one buffer. */
    r->raw = g_try_malloc0(r->rowbytes * (passes > 1 ? r->height : 1));
    if (r->img == NULL || r->raw == NULL) {
        dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory for a %ux%u image", r->name, r->width,
                r->height);
        return 0;
    }
    return passes;
}

/* Every row, made RGB into r->img. */
static void png_decode_rows(PngReader *r, png_structp png, int passes) {
    size_t rowbytes = r->rowbytes, out_stride = (size_t)r->width * 3;
    r->in_rows = TRUE;
    if (passes > 1) {
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < r->height; y++)
                png_read_row(png, r->raw + y * rowbytes, NULL);
        for (png_uint_32 y = 0; y < r->height; y++)
            png_row_to_rgb(r->raw + y * rowbytes, r->img->pixels + y * out_stride, (int)r->width,
                           r->color_type, r->depth, r->palette);
    } else {
        for (png_uint_32 y = 0; y < r->height; y++) {
            png_read_row(png, r->raw, NULL);
            png_row_to_rgb(r->raw, r->img->pixels + y * out_stride, (int)r->width, r->color_type,
                           r->depth, r->palette);
            r->rows_done = y + 1;
        }
    }
    r->pixels_done = TRUE;
}

/* The whole file read: header, rows, and the chunks after the image data. libpng's errors
 * longjmp out of here to png_decode_with. */
static gboolean png_decode_file(PngReader *r, png_structp png, png_infop info, GError **err) {
    if (!png_decode_header(r, png, info, err))
        return FALSE;
    int passes = png_prepare_rows(r, png, info, err);
    if (passes == 0)
        return FALSE;
    png_decode_rows(r, png, passes);
    /* Chunks after IDAT may carry eXIf or XMP. */
    png_read_end(png, info);
    return TRUE;
}

/* Everything the decoder changes after setjmp lives in *r (heap) or behind meta, so nothing
 * a longjmp could leave indeterminate is read afterwards. */
static DqImage *png_decode_with(PngReader *r, DqImageMeta *meta, GError **err) {
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, r, png_error_cb,
                                               png_warning_cb, r, png_malloc_cb, png_free_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory starting the PNG decoder", r->name);
        return NULL;
    }
    if (setjmp(png_jmpbuf(png))) {
        if (png_recover(r, err))
            goto done;
        goto fail;
    }
    png_read_like_pillow(png, r);
    if (!png_decode_file(r, png, info, err))
        goto fail;
done:
    png_collect_meta(r, meta);
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
    r->idat = g_array_new(FALSE, FALSE, sizeof(ByteRange));
    r->scratch = g_byte_array_new();
    DqImage *img = png_decode_with(r, meta, err);
    dq_image_free(r->img);
    g_free(r->raw);
    GByteArray *owned[] = {r->exif, r->xmp, r->xmp_itxt, r->raw_exif, r->scratch};
    for (size_t i = 0; i < G_N_ELEMENTS(owned); i++)
        if (owned[i] != NULL)
            g_byte_array_unref(owned[i]);
    g_array_unref(r->idat);
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

static void png_write_warning_cb(png_structp png, png_const_charp msg) {}

GBytes *dq_image_encode_png(const DqImage *img, GError **err) {
    if (img == NULL || img->width <= 0 || img->height <= 0 || img->pixels == NULL) {
        dq_fail(err, DQ_ERR_ARGS, "cannot encode an empty image as PNG");
        return NULL;
    }
    PngWriter w = {.out = g_byte_array_new()};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_write_error_cb,
                                              png_write_warning_cb);
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
