/* TIFF pages with libtiff's RGBA interface: every directory of the main IFD chain is a page. */
#include "ingest_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

/* libtiff reports through process-wide handlers; a worker process decodes one file at a time,
 * so the first error since the last reset is the one worth recording. Whole: libtiff names the
 * file in it, and a fixed buffer cut long paths, in the middle of a character too. */
static char *tiff_first_error;
static int tiff_error_count;

static void tiff_on_error(const char *module, const char *fmt, va_list ap) {
    if (tiff_error_count++ == 0) {
        char *msg = g_strdup_vprintf(fmt, ap);
        g_free(tiff_first_error);
        tiff_first_error = g_strdup_printf("%s%s%s", module ? module : "", module ? ": " : "", msg);
        g_free(msg);
    }
}

static const char *tiff_error_or(const char *fallback) {
    return tiff_first_error != NULL && tiff_first_error[0] ? tiff_first_error : fallback;
}

static void tiff_on_warning(const char *module, const char *fmt, va_list ap) {
    /* Unknown tags, odd but decodable fields: not worth a line per page. */
}

static void tiff_errors_reset(void) {
    tiff_error_count = 0;
    g_free(tiff_first_error);
    tiff_first_error = NULL;
}

gboolean tiff_doc_open(RenderDoc *doc, GError **err) {
    TIFFSetErrorHandler(tiff_on_error);
    TIFFSetWarningHandler(tiff_on_warning);
    tiff_errors_reset();
#if TIFFLIB_VERSION >= 20221213 /* libtiff 4.5: open options */
    /* No single allocation inside libtiff above 2 GiB (a 16-bit RGBA strip at the default pixel
     * limit is 1.4 GB): a header claiming 65535 samples per pixel fails here with a message
     * instead of asking the system for hundreds of gigabytes. */
    TIFFOpenOptions *oo = TIFFOpenOptionsAlloc();
    TIFFOpenOptionsSetMaxSingleMemAlloc(oo, (tmsize_t)2 << 30);
    /* TIFFClose closes the descriptor TIFFFdOpen was given; doc->fd stays the caller's. */
    int fd = doc->fd >= 0 ? dup(doc->fd) : -1;
    TIFF *tif = doc->fd < 0 ? TIFFOpenExt(doc->path, "r", oo)
                : fd >= 0   ? TIFFFdOpenExt(fd, doc->path, "r", oo)
                            : NULL;
    TIFFOpenOptionsFree(oo);
#else
    int fd = doc->fd >= 0 ? dup(doc->fd) : -1;
    TIFF *tif = doc->fd < 0 ? TIFFOpen(doc->path, "r")
                : fd >= 0   ? TIFFFdOpen(fd, doc->path, "r")
                            : NULL;
#endif
    if (tif == NULL && fd >= 0)
        close(fd);
    if (tif == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: not a readable TIFF: %s",
                    doc->path, tiff_error_or("TIFFOpen failed"));
        return FALSE;
    }
    doc->tiff = tif;
    /* Count the main chain. TIFFReadDirectory returns 0 at the normal end, on a broken link
     * (with an error) and at an IFD that loops back (with only a warning; the directory before
     * it stays current, and is not the last). A loop costs no page: every IFD it reaches is one
     * already counted. Pillow counts the same pages (n_frames) and says nothing. */
    int n = 1;
    tiff_errors_reset();
    while (TIFFReadDirectory(tif)) {
        n++;
        tiff_errors_reset();
    }
    if (tiff_error_count > 0)
        doc->warning = g_strdup_printf("IFD chain broken after page %d: %s", n, tiff_error_or("?"));
    else if (!TIFFLastDirectory(tif))
        doc->note = g_strdup_printf("IFD chain loops back after page %d (its next-IFD offset "
                                    "points at a page already read); the %d page%s before the "
                                    "loop kept",
                                    n, n, n == 1 ? "" : "s");
    doc->page_count = n;
    return TRUE;
}

/* Composites the ABGR raster onto white into RGB. Every put routine of libtiff's that hands out
 * alpha is replaced in decode_rgba, so the raster is opaque by now; were one missed, libtiff's
 * alpha is premultiplied and this is the right composite for it. */
static DqImage *raster_to_rgb(const uint32_t *raster, int w, int h) {
    DqImage *img = dq_image_new(w, h);
    if (img == NULL)
        return NULL;
    size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        uint32_t px = raster[i];
        unsigned a = TIFFGetA(px);
        unsigned r = TIFFGetR(px) + 255 - a, g = TIFFGetG(px) + 255 - a, b = TIFFGetB(px) + 255 - a;
        img->pixels[3 * i + 0] = r > 255 ? 255 : r;
        img->pixels[3 * i + 1] = g > 255 ? 255 : g;
        img->pixels[3 * i + 2] = b > 255 ? 255 : b;
    }
    return img;
}

/* What the first extra sample is, read the way Pillow reads it (TiffImagePlugin's OPEN_INFO), the
 * model's contract being "what transformers/Pillow gives". libtiff reads it differently: it takes
 * "unspecified" for associated alpha when there are more than 3 samples (Pillow: RGBX, ignored),
 * an RGB image of 4 samples without ExtraSamples for associated alpha (Pillow: unassociated,
 * RGBA), premultiplies unassociated alpha for RGB but not for gray (so a gray page came out too
 * light), and ignores alpha beside a palette (Pillow: PA). */
typedef enum { ALPHA_NONE, ALPHA_STRAIGHT, ALPHA_PREMULTIPLIED } AlphaKind;

static AlphaKind tiff_alpha_kind(TIFF *tif, uint16_t photometric) {
    uint16_t spp = 1, n_extra = 0;
    uint16_t *extra = NULL;
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    if (!TIFFGetField(tif, TIFFTAG_EXTRASAMPLES, &n_extra, &extra) || n_extra == 0)
        return photometric == PHOTOMETRIC_RGB && spp == 4 ? ALPHA_STRAIGHT : ALPHA_NONE;
    return extra[0] == EXTRASAMPLE_UNASSALPHA   ? ALPHA_STRAIGHT
           : extra[0] == EXTRASAMPLE_ASSOCALPHA ? ALPHA_PREMULTIPLIED
                                                : ALPHA_NONE;
}

typedef struct {
    TIFFRGBAImage img; /* first: the put routines get a pointer to it */
    AlphaKind alpha;
    gboolean signed_samples; /* SampleFormat 2 */
} RgbaDecoder;

/* One channel of a pixel over opaque white, bit for bit as transformers' convert_to_rgb does it
 * (Pillow's Image.alpha_composite onto a white RGBA background; its ImagingAlphaComposite with
 * the destination alpha 255, 7 bits of fixed-point precision). Premultiplied samples are first
 * made straight as Pillow unpacks "RGBa" (c * 255 / a, truncated, clipped). */
static unsigned over_white(unsigned c, unsigned a, AlphaKind kind) {
    if (kind == ALPHA_NONE || a == 255)
        return c;
    if (a == 0)
        return 255;
    if (kind == ALPHA_PREMULTIPLIED)
        c = MIN(255u, c * 255 / a);
    unsigned coef1 = a << 7, coef2 = (255u << 7) - coef1;
    unsigned t = c * coef1 + 255 * coef2 + (0x80u << 7);
    return ((t >> 8) + t) >> 8 >> 7;
}

/* A 16-bit sample made 8 bits. Colour and alpha samples as Pillow makes them: its unpackers
 * (RGB;16L, RGBA;16L, RGBa;16L, RGBX;16L and their ;16B, ;16N forms) keep the high byte, where
 * libtiff rounds (v / 257). Gray departs from Pillow on purpose: Pillow opens 16-bit gray as mode
 * I;16 whatever the Photometric and convert("RGB") clips the values to 0..255, which leaves a
 * scan white where its ink is lighter than 256/65536 of black; docqa reads the page as the TIFF
 * describes it, the high byte (of the value moved to unsigned for signed samples), MinIsWhite
 * inverted. */
static unsigned narrow16(const RgbaDecoder *d, unsigned v, gboolean gray) {
    if (!gray)
        return v >> 8;
    unsigned hi = (d->signed_samples ? v ^ 0x8000u : v) >> 8;
    return d->img.photometric == PHOTOMETRIC_MINISWHITE ? 255 - hi : hi;
}

/* A pixel's colour samples (1 or 3) and its alpha, 8 bits each, packed opaque: 8-bit samples
 * libtiff's way for the layout (the gray map handles MinIsWhite), 16-bit ones Pillow's. */
static uint32_t pack_over_white(const RgbaDecoder *d, const unsigned *s, int colors) {
    const TIFFRGBAImage *img = &d->img;
    gboolean wide = img->bitspersample == 16;
    gboolean gray =
        img->photometric == PHOTOMETRIC_MINISBLACK || img->photometric == PHOTOMETRIC_MINISWHITE;
    /* zeros: gcc -fanalyzer cannot tell the loop below sets all three when colors is 3 */
    unsigned c[3] = {0, 0, 0}, a = wide ? narrow16(d, s[colors], FALSE) : s[colors];
    for (int k = 0; k < colors; k++)
        c[k] = wide ? narrow16(d, s[k], gray) : s[k];
    if (colors == 1 && img->photometric == PHOTOMETRIC_PALETTE) {
        uint32_t px = img->PALmap[c[0]][0];
        c[0] = TIFFGetR(px), c[1] = TIFFGetG(px), c[2] = TIFFGetB(px);
    } else if (colors == 1 && !wide && img->BWmap != NULL) {
        c[0] = c[1] = c[2] = TIFFGetR(img->BWmap[c[0]][0]);
    } else if (colors == 1) {
        c[1] = c[2] = c[0];
    }
    unsigned r = over_white(c[0], a, d->alpha), g = over_white(c[1], a, d->alpha),
             b = over_white(c[2], a, d->alpha);
    return r | g << 8 | b << 16 | 0xffu << 24;
}

static void put_contig_over_white(TIFFRGBAImage *img, uint32_t *cp, uint32_t x, uint32_t y,
                                  uint32_t w, uint32_t h, int32_t fromskew, int32_t toskew,
                                  unsigned char *pp) {
    (void)x, (void)y;
    const RgbaDecoder *d = (const RgbaDecoder *)img;
    int spp = img->samplesperpixel;
    int colors = img->photometric == PHOTOMETRIC_RGB ? 3 : 1;
    gboolean wide = img->bitspersample == 16;
    size_t step = (size_t)spp * (wide ? 2 : 1);
    for (; h > 0; h--) {
        for (uint32_t i = 0; i < w; i++, pp += step) {
            unsigned s[4] = {0, 0, 0, 255};
            /* Past the colours: the alpha sample, or anything when it is ignored. */
            for (int k = 0; k <= colors && k < spp; k++)
                s[k] = wide ? ((const uint16_t *)pp)[k] : pp[k];
            if (spp <= colors)
                s[colors] = wide ? 65535 : 255;
            *cp++ = pack_over_white(d, s, colors);
        }
        cp += toskew;
        pp += (ptrdiff_t)fromskew * (ptrdiff_t)step;
    }
}

/* Sample i of a plane, 8 or 16 bits; libtiff reads no alpha plane when it sees no alpha (Pillow
 * may): opaque then. */
static unsigned plane_sample(const unsigned char *p, uint32_t i, gboolean wide) {
    return p == NULL ? (wide ? 65535 : 255) : wide ? ((const uint16_t *)p)[i] : p[i];
}

static void put_separate_over_white(TIFFRGBAImage *img, uint32_t *cp, uint32_t x, uint32_t y,
                                    uint32_t w, uint32_t h, int32_t fromskew, int32_t toskew,
                                    unsigned char *r, unsigned char *g, unsigned char *b,
                                    unsigned char *a) {
    (void)x, (void)y;
    const RgbaDecoder *d = (const RgbaDecoder *)img;
    gboolean wide = img->bitspersample == 16;
    size_t bytes = wide ? 2 : 1;
    unsigned char *planes[4] = {r, g, b, a};
    for (; h > 0; h--) {
        for (uint32_t i = 0; i < w; i++) {
            const unsigned s[4] = {
                plane_sample(planes[0], i, wide), plane_sample(planes[1], i, wide),
                plane_sample(planes[2], i, wide), plane_sample(planes[3], i, wide)};
            *cp++ = pack_over_white(d, s, 3);
        }
        for (int k = 0; k < 4; k++)
            if (planes[k] != NULL)
                planes[k] += ((size_t)w + (size_t)fromskew) * bytes;
        cp += toskew;
    }
}

/* 8-bit CMYK made RGB as Pillow's convert("RGB") makes it (cmyk2rgb: 255 - k - c * (255 - k) /
 * 255, rounded), where libtiff truncates (255 - k) * (255 - c) / 255: they differ by one in
 * half the cases. */
static uint32_t cmyk_to_rgb(unsigned c, unsigned m, unsigned y, unsigned k) {
    unsigned nk = 255 - k, out[3], in[3] = {c, m, y};
    for (int i = 0; i < 3; i++) {
        unsigned t = in[i] * nk + 128;
        out[i] = nk - (((t >> 8) + t) >> 8);
    }
    return out[0] | out[1] << 8 | out[2] << 16 | 0xffu << 24;
}

static void put_cmyk_contig(TIFFRGBAImage *img, uint32_t *cp, uint32_t x, uint32_t y, uint32_t w,
                            uint32_t h, int32_t fromskew, int32_t toskew, unsigned char *pp) {
    (void)x, (void)y;
    int spp = img->samplesperpixel; /* extra samples past K ignored, as Pillow's CMYKX */
    for (; h > 0; h--) {
        for (uint32_t i = 0; i < w; i++, pp += spp)
            *cp++ = cmyk_to_rgb(pp[0], pp[1], pp[2], pp[3]);
        cp += toskew;
        pp += (ptrdiff_t)fromskew * spp;
    }
}

/* libtiff hands the four planes over as r, g, b and a (it marks CMYK as having alpha for it). */
static void put_cmyk_separate(TIFFRGBAImage *img, uint32_t *cp, uint32_t x, uint32_t y, uint32_t w,
                              uint32_t h, int32_t fromskew, int32_t toskew, unsigned char *c,
                              unsigned char *m, unsigned char *ye, unsigned char *k) {
    (void)img, (void)x, (void)y;
    for (; h > 0; h--) {
        for (uint32_t i = 0; i < w; i++)
            *cp++ = cmyk_to_rgb(c[i], m[i], ye[i], k[i]);
        size_t step = (size_t)w + (size_t)fromskew;
        c += step, m += step, ye += step, k += step;
        cp += toskew;
    }
}

/* Decodes the current directory into a white-filled raster with rows top to bottom exactly as
 * stored (orientation is applied afterwards, all eight values, in one place). Returns 0 when
 * decoded, 1 when libtiff refuses the layout (TIFFRGBAImageBegin), 2 when decoding failed; *why
 * says why (g_free it). */
static int decode_rgba(TIFF *tif, uint32_t *raster, int w, int h, int stop_on_error, char **why) {
    char emsg[1024] = "";
    RgbaDecoder dec;
    memset(&dec, 0, sizeof dec);
    TIFFRGBAImage *img = &dec.img;
    if (!TIFFRGBAImageBegin(img, tif, stop_on_error, emsg)) {
        *why = g_strdup(emsg);
        return 1;
    }
    /* libtiff would flip for Orientation 2-4 but cannot transpose 5-8: ask for the stored
     * layout and do all eight in dq_image_orient. */
    img->req_orientation = ORIENTATION_TOPLEFT;
    img->orientation = ORIENTATION_TOPLEFT;
    /* Wherever libtiff or Pillow sees alpha, and for every 16-bit sample, our put routine
     * decides what the samples mean (see tiff_alpha_kind, narrow16); the layouts are those
     * libtiff has alpha-aware routines for, plus an 8-bit palette (whose routine libtiff picked
     * already, so its colour map is built). */
    dec.alpha = tiff_alpha_kind(tif, img->photometric);
    uint16_t ph = img->photometric, format = SAMPLEFORMAT_UINT;
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &format);
    dec.signed_samples = format == SAMPLEFORMAT_INT;
    gboolean wide = img->bitspersample == 16;
    gboolean layout = (ph == PHOTOMETRIC_MINISBLACK || ph == PHOTOMETRIC_MINISWHITE ||
                       ph == PHOTOMETRIC_RGB || (ph == PHOTOMETRIC_PALETTE && img->isContig)) &&
                      (img->bitspersample == 8 || wide);
    if (layout && (dec.alpha != ALPHA_NONE || img->alpha != 0 || wide)) {
        if (img->isContig)
            img->put.contig = put_contig_over_white;
        else
            img->put.separate = put_separate_over_white;
    }
    /* The layouts libtiff has 8-bit CMYK routines for (InkSet CMYK, at least 4 samples). */
    if (ph == PHOTOMETRIC_SEPARATED && img->bitspersample == 8 && img->samplesperpixel >= 4) {
        if (img->isContig && img->put.contig != NULL)
            img->put.contig = put_cmyk_contig;
        else if (!img->isContig && img->put.separate != NULL)
            img->put.separate = put_cmyk_separate;
    }
    int ok = TIFFRGBAImageGet(img, raster, (uint32_t)w, (uint32_t)h);
    TIFFRGBAImageEnd(img);
    if (!ok)
        *why = g_strdup(emsg[0] ? emsg : tiff_error_or("decoding failed"));
    return ok ? 0 : 2;
}

/* One page being rendered: its document and directory, the fields read from it, and the size it
 * is rendered at. */
typedef struct {
    RenderDoc *doc;
    TIFF *tif;
    int page;
    uint32_t w32, h32;
    uint16_t compression, orientation;
    int tw, th; /* the output size */
} TiffPage;

/* The page's directory made current and its size, compression and orientation read;
 * *source_w/h set (after Orientation) even when the size is refused. */
static gboolean read_page_fields(TiffPage *pg, double *source_w, double *source_h, GError **err) {
    TIFF *tif = pg->tif;
    tiff_errors_reset();
    if (!TIFFSetDirectory(tif, (tdir_t)(pg->page - 1))) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: cannot read IFD: %s",
                    pg->doc->path, pg->page, tiff_error_or("?"));
        return FALSE;
    }
    pg->compression = COMPRESSION_NONE;
    pg->orientation = ORIENTATION_TOPLEFT;
    TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &pg->w32);
    TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &pg->h32);
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &pg->compression);
    TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &pg->orientation);
    if (pg->orientation < 1 || pg->orientation > 8)
        pg->orientation = ORIENTATION_TOPLEFT;
    gboolean swap = pg->orientation >= 5;
    *source_w = swap ? pg->h32 : pg->w32;
    *source_h = swap ? pg->w32 : pg->h32;
    if (pg->w32 == 0 || pg->h32 == 0 || pg->w32 > G_MAXINT || pg->h32 > G_MAXINT) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: size %ux%u",
                    pg->doc->path, pg->page, pg->w32, pg->h32);
        return FALSE;
    }
    if (!TIFFIsCODECConfigured(pg->compression)) {
        const TIFFCodec *c = TIFFFindCODEC(pg->compression);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_UNSUPPORTED_CODEC,
                    "%s: page %d: compression %u (%s) is not built into libtiff", pg->doc->path,
                    pg->page, pg->compression, c && c->name ? c->name : "unknown");
        return FALSE;
    }
    return TRUE;
}

/* Before allocating anything: a header can claim any size. The limit bounds every image a page
 * makes, as for a PDF page (rendered at its output size): the decoded page and, when it is
 * upscaled, the output. */
static gboolean check_pixels(TiffPage *pg, double source_w, double source_h, int longest_edge,
                             gint64 max_pixels, GError **err) {
    dq_ingest_target_size(source_w, source_h, longest_edge, &pg->tw, &pg->th);
    if ((gint64)pg->w32 * pg->h32 > max_pixels) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_TOO_MANY_PIXELS,
                    "%s: page %d: %ux%u pixels is over the limit of %" G_GINT64_FORMAT,
                    pg->doc->path, pg->page, pg->w32, pg->h32, max_pixels);
        return FALSE;
    }
    if ((gint64)pg->tw * pg->th > max_pixels) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_TOO_MANY_PIXELS,
                    "%s: page %d: resized to %dx%d, %" G_GINT64_FORMAT
                    " pixels is over the limit of %" G_GINT64_FORMAT,
                    pg->doc->path, pg->page, pg->tw, pg->th, (gint64)pg->tw * pg->th, max_pixels);
        return FALSE;
    }
    return TRUE;
}

/* The samples a pixel and the pixel format: what libtiff's RGBA interface can read, within
 * Pillow's limit. */
static gboolean check_format(TiffPage *pg, GError **err) {
    /* Pillow (TiffImagePlugin's MAX_SAMPLESPERPIXEL) reads at most 6 samples a pixel, unspecified
     * extra planes stored separately left out; libtiff would take any number, and its strip
     * buffers grow with them past any pixel limit (a 300-byte file of 16x6672 pixels of 4901
     * samples made it ask for 2 GB). */
    uint16_t spp = 1, planar = PLANARCONFIG_CONTIG, n_extra = 0;
    uint16_t *extra = NULL;
    TIFFGetFieldDefaulted(pg->tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(pg->tif, TIFFTAG_PLANARCONFIG, &planar);
    TIFFGetField(pg->tif, TIFFTAG_EXTRASAMPLES, &n_extra, &extra);
    int counted = spp;
    gboolean extras_unspecified = n_extra > 0 && n_extra <= spp;
    for (int i = 0; i < n_extra && extras_unspecified; i++)
        extras_unspecified = extra[i] == EXTRASAMPLE_UNSPECIFIED;
    if (planar == PLANARCONFIG_SEPARATE && extras_unspecified)
        counted -= n_extra;
    if (counted > 6) { /* "Invalid value for samples per pixel" to Pillow: a damaged file */
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED,
                    "%s: page %d: %u samples a pixel, an invalid value (Pillow reads at most 6)",
                    pg->doc->path, pg->page, spp);
        return FALSE;
    }
    char emsg[1024] = "";
    if (!TIFFRGBAImageOK(pg->tif, emsg)) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_UNSUPPORTED_FORMAT,
                    "%s: page %d: pixel format not supported: %s", pg->doc->path, pg->page, emsg);
        return FALSE;
    }
    return TRUE;
}

/* The page's pixels as stored, in a raster of w32 x h32 (g_free it), or NULL. A decoding error
 * keeps what decodes (a truncated strip, a damaged fax line) and sets *incomplete. */
static uint32_t *decode_page(TiffPage *pg, gboolean *incomplete, char **incomplete_msg,
                             GError **err) {
    int w = (int)pg->w32, h = (int)pg->h32;
    size_t n = (size_t)w * h;
    uint32_t *raster = g_try_malloc(n * sizeof *raster);
    if (raster == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate %dx%d pixels", pg->doc->path, pg->page, w, h);
        return NULL;
    }
    memset(raster, 0xff, n * sizeof *raster);
    char *first = NULL;
    int rc = decode_rgba(pg->tif, raster, w, h, 1, &first);
    if (rc == 1) {
        g_free(raster);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_UNSUPPORTED_FORMAT,
                    "%s: page %d: pixel format not supported: %s", pg->doc->path, pg->page, first);
        g_free(first);
        return NULL;
    }
    if (rc != 0) {
        /* Keep what decodes (a truncated strip, a damaged fax line) and report the error. */
        char *again = NULL;
        memset(raster, 0xff, n * sizeof *raster);
        tiff_errors_reset();
        if (!TIFFSetDirectory(pg->tif, (tdir_t)(pg->page - 1)) ||
            decode_rgba(pg->tif, raster, w, h, 0, &again) != 0) {
            g_free(raster);
            g_free(again);
            g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: %s", pg->doc->path,
                        pg->page, first);
            g_free(first);
            return NULL;
        }
        *incomplete = TRUE;
        *incomplete_msg =
            g_strdup_printf("%s: page %d: incomplete: %s", pg->doc->path, pg->page, first);
        g_free(first);
    }
    return raster;
}

/* The decoded raster (freed here) made the page image: RGB over white, oriented, resized. */
static DqImage *raster_to_page(const TiffPage *pg, uint32_t *raster, GError **err) {
    int w = (int)pg->w32, h = (int)pg->h32;
    DqImage *rgb = raster_to_rgb(raster, w, h);
    g_free(raster);
    if (rgb != NULL && pg->orientation != ORIENTATION_TOPLEFT) {
        DqImage *o = dq_image_orient(rgb, pg->orientation);
        dq_image_free(rgb);
        rgb = o;
    }
    if (rgb == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate %dx%d pixels", pg->doc->path, pg->page, w, h);
        return NULL;
    }
    if (pg->tw == rgb->width && pg->th == rgb->height)
        return rgb;
    DqImage *out = dq_image_resize_lanczos(rgb, pg->tw, pg->th);
    dq_image_free(rgb);
    if (out == NULL)
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot resize to %dx%d", pg->doc->path, pg->page, pg->tw, pg->th);
    return out;
}

DqImage *tiff_render_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                          double *source_w, double *source_h, gboolean *incomplete,
                          char **incomplete_msg, GError **err) {
    TiffPage pg = {.doc = doc, .tif = doc->tiff, .page = page};
    if (!read_page_fields(&pg, source_w, source_h, err) ||
        !check_pixels(&pg, *source_w, *source_h, longest_edge, max_pixels, err) ||
        !check_format(&pg, err))
        return NULL;
    uint32_t *raster = decode_page(&pg, incomplete, incomplete_msg, err);
    return raster != NULL ? raster_to_page(&pg, raster, err) : NULL;
}

void tiff_doc_close(RenderDoc *doc) {
    if (doc->tiff != NULL)
        TIFFClose(doc->tiff);
    doc->tiff = NULL;
}
