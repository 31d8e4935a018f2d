/* server/export_onnx.h -- GET /v1/models/{id}/export?format=onnx: the model as an ONNX file.
 *
 * The export route (routes_models.c) hands a request whose `format` is "onnx" here; this file
 * keeps the binary answer apart from the JSON export. lib/onnx_export.c does the encoding.
 */
#ifndef ND_EXPORT_ONNX_H
#define ND_EXPORT_ONNX_H

#include "err.h"
#include "http.h"

/* Answer the export route's request with the ONNX encoding of model {id}: 200
 * application/octet-stream with Content-Disposition attachment; filename="<name or
 * model-<id>>.onnx". Query `dtype`: float64 (default) or float32, else ERR_INVAL naming
 * `dtype`. A graph model with an op ONNX cannot express is ERR_INVAL naming `format`. */
int export_onnx_reply(http_req_t *req, err_t *err);

#endif /* ND_EXPORT_ONNX_H */
