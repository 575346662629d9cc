/* Image files -> RGB, as transformers' load_image: open (format sniffed from the bytes),
 * ImageOps.exif_transpose (unless told to ignore it), convert("RGB"). */
#include "dq_error.h"
#include "image_private.h"

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
        dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: not a PNG or JPEG file (unknown signature)", name);
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

DqImage *dq_image_load(const char *path, DqExifMode exif, GError **err) {
    char *data = NULL;
    gsize len = 0;
    GError *io = NULL;
    if (!g_file_get_contents(path, &data, &len, &io)) {
        dq_fail(err, DQ_ERR_IO, "%s: cannot read image: %s", path, io->message);
        g_error_free(io);
        return NULL;
    }
    DqImage *img = dq_image_decode((const uint8_t *)data, len, path, exif, err);
    g_free(data);
    return img;
}
