/* Image files -> RGB, as transformers' load_image: open (format sniffed from the bytes),
 * ImageOps.exif_transpose (unless told to ignore it), convert("RGB"). */
#include "dq_error.h"
#include "file_kind.h"
#include "json_load.h" /* dq_file_read_regular */
#include "image_private.h"

#include <string.h>

DqImage *dq_image_decode(const uint8_t *data, size_t len, const char *name, DqExifMode exif,
                         GError **err) {
    if (name == NULL)
        name = "<memory>";
    if (data == NULL || len == 0) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: empty file, not an image", name);
        return NULL;
    }
    DqImageMeta meta = {0};
    DqImage *img;
    if (dq_image_is_png(data, len)) {
        img = dq_png_decode(data, len, name, &meta, err);
    } else if (dq_image_is_jpeg(data, len)) {
        img = dq_jpeg_decode(data, len, name, &meta, err);
    } else {
        gboolean conclusive;
        const char *what = dq_file_kind_name(data, MIN(len, 4096), &conclusive);
        if (what == NULL)
            dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: not a PNG or JPEG file (unknown signature)",
                    name);
        else if (g_str_has_suffix(what, "PDF document") || g_str_has_suffix(what, "TIFF image"))
            dq_fail(err, DQ_ERR_UNSUPPORTED,
                    "%s: %s, not a PNG or JPEG image (`docqa ingest` renders PDFs and TIFFs into "
                    "page images)",
                    name, what);
        else
            dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: %s, not a PNG or JPEG image%s", name, what,
                    strstr(what, "image") != NULL ? " (convert it to PNG)" : "");
        return NULL;
    }
    if (img != NULL && exif == DQ_EXIF_APPLY) {
        int orientation = dq_image_meta_orientation(&meta);
        if (orientation >= 2 && orientation <= 8) {
            DqImage *turned = dq_image_orient(img, orientation);
            dq_image_free(img);
            img = turned;
            if (img == NULL)
                dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory applying EXIF orientation %d", name,
                        orientation);
        }
    }
    dq_image_meta_clear(&meta);
    return img;
}

/* A PNG or JPEG of the largest image decoded (DQ_IMAGE_MAX_PIXELS) is far smaller. */
#define IMAGE_MAX_FILE_BYTES ((size_t)2 << 30)

DqImage *dq_image_load(const char *path, DqExifMode exif, GError **err) {
    size_t len = 0;
    /* Not g_file_get_contents: it waits forever on a FIFO and reads /dev/zero until memory
     * runs out. */
    char *data = dq_file_read_regular(path, IMAGE_MAX_FILE_BYTES, &len, err);
    if (data == NULL) {
        g_prefix_error(err, "cannot read image: ");
        return NULL;
    }
    DqImage *img = dq_image_decode((const uint8_t *)data, len, path, exif, err);
    g_free(data);
    return img;
}
