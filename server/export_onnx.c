/* server/export_onnx.c -- the ONNX answer of GET /v1/models/{id}/export?format=onnx. */
#include "export_onnx.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "onnx_export.h"
#include "registry.h"
#include "store.h"

#ifndef NEUROND_VERSION
#define NEUROND_VERSION "0.0.0"
#endif

#define FILENAME_MAX_CHARS 128

/* The download's file name: the model's name with every byte outside [A-Za-z0-9._-] made '_'
 * (a header value must stay one plain quoted token), or model-<id> for an unnamed model. */
static void download_name(const char *name, int64_t id, char *buf, size_t size)
{
    if (name == NULL || name[0] == '\0') {
        snprintf(buf, size, "model-%" PRId64 ".onnx", id);
        return;
    }
    size_t n = 0;
    for (const char *c = name; *c != '\0' && n < FILENAME_MAX_CHARS && n + 6 < size; ++c) {
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')
                 || (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-';
        buf[n++] = ok ? *c : '_';
    }
    snprintf(buf + n, size - n, ".onnx");
}

int export_onnx_reply(http_req_t *req, err_t *err)
{
    const char *dtype_name = http_query(req, "dtype");
    int32_t dtype = dtype_name == NULL ? ONNX_DTYPE_FLOAT64 : onnx_dtype_from_name(dtype_name);
    if (dtype == 0)
        return err_set_field(err, ERR_INVAL, "dtype", "dtype must be \"float64\" or "
                             "\"float32\"");
    int64_t id = http_param(req, 0);
    store_model_t row;
    registry_copy_t copy;
    int rc;
    if ((rc = registry_load_row(app_of(req)->registry, id, &row, &copy, err)) < 0)
        return rc;
    onnx_export_opts_t opts = {.dtype = dtype, .producer_version = NEUROND_VERSION,
                               .step = copy.step, .spec_json = row.spec_json};
    uint8_t *bytes = NULL;
    size_t len = 0;
    char filename[FILENAME_MAX_CHARS + 32], disposition[FILENAME_MAX_CHARS + 64];
    download_name(row.name, id, filename, sizeof filename);
    snprintf(disposition, sizeof disposition, "attachment; filename=\"%s\"", filename);
    rc = onnx_export(copy.model, &opts, &bytes, &len, err);
    store_model_clear(&row);
    registry_copy_free(&copy);
    if (rc < 0)
        return rc;
    if ((rc = http_set_header(req, "Content-Disposition", disposition)) == 0)
        rc = http_reply_text(req, 200, "application/octet-stream", bytes, len);
    free(bytes);
    return rc;
}
