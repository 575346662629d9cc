/* libFuzzer target: the safetensors header parser and everything a parsed tensor promises.
 * Every tensor the parser accepts must be readable in full (its bytes lie inside the input), so
 * each one is converted to float32; ASan catches any read past the input. The tensors of an
 * accepted file cover its data section exactly, as the safetensors library requires: their
 * sizes add up to it (no two share a byte, nothing is left over). */
#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy exactly `size` long, so reading one byte past it is an ASan error. */
    uint8_t *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL)
        return 0;
    for (size_t i = 0; i < size; i++)
        copy[i] = data[i];
    GError *err = NULL;
    DqSafeTensors *st = safetensors_parse(copy, size, "fuzz.safetensors", &err);
    if (st == NULL) {
        g_clear_error(&err);
        free(copy);
        return 0;
    }
    const char **names = safetensors_names(st);
    uint64_t hlen = 0, covered = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | copy[i];
    for (guint i = 0; i < safetensors_count(st); i++) {
        const DqTensor *t = safetensors_get(st, names[i]);
        covered += t->nbytes;
        if ((const uint8_t *)t->data < copy + 8 + hlen ||
            (const uint8_t *)t->data + t->nbytes > copy + size)
            abort();
        const DqTensor *r = safetensors_require(st, names[i], t->ndim, t->shape, &err);
        if (r != t)
            abort();
        if (t->nbytes != (size_t)t->numel * dq_dtype_size(t->dtype))
            abort();
        float buf[256];
        for (int64_t done = 0; done < t->numel;) {
            int64_t n = t->numel - done < 256 ? t->numel - done : 256;
            dq_convert_to_f32(buf, (const uint8_t *)t->data + done * dq_dtype_size(t->dtype),
                              t->dtype, (size_t)n);
            done += n;
        }
    }
    if (covered != size - 8 - hlen)
        abort();
    g_free(names);
    safetensors_free(st);
    free(copy);
    return 0;
}
