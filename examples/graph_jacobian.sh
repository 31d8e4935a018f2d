#!/usr/bin/env bash
# examples/graph_jacobian.sh -- a computation graph and its Jacobians through POST
# /v1/graphs/eval: the composition F∘G with
#
#     G(t) = [t, t²]                 F(x, y) = [x² + 2y, 3x + 4y²]
#
# at t = 1.5. By the chain rule J_{F∘G}(t) = J_F(G(t)) · J_G(t):
#
#     J_G  = [[1], [2t]]                  = [[1], [3]]
#     J_F  = [[2x, 2], [3, 8y]]           = [[3, 2], [3, 18]]     at (x, y) = (1.5, 2.25)
#     J_FG = [[2t + 4t], [3 + 16t³]]      = [[9], [57]]
#
# The graph has no concatenation op, so G builds the row [t, t²] as t·[1, 0] + t²·[0, 1], and F
# is square(g)·A + g·B with constant matrices A = [[1,0],[0,4]], B = [[0,3],[2,0]]. Its output
# L = sum(F) is the scalar whose gradient "wrt" asks for: dL/dt = 9 + 57 = 66.
#
#     scripts/serve &                  # or any running neurond
#     examples/graph_jacobian.sh
#
# Environment: NEUROND_URL (default http://127.0.0.1:8080), NEUROND_TOKEN (bearer token, when
# neurond runs with --token-file). Needs bash and curl. Exits non-zero on any HTTP error, or when
# a Jacobian differs from the values above. Nothing is stored: graph evaluation is stateless.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

GRAPH='{"nodes":[
{"id":"t","op":"input","shape":[1]},
{"id":"e1","op":"const","shape":[1,2],"value":[[1,0]]},
{"id":"e2","op":"const","shape":[1,2],"value":[[0,1]]},
{"id":"t2","op":"square","inputs":["t"]},
{"id":"gx","op":"mul","inputs":["t","e1"]},
{"id":"gy","op":"mul","inputs":["t2","e2"]},
{"id":"g","op":"add","inputs":["gx","gy"]},
{"id":"A","op":"const","shape":[2,2],"value":[[1,0],[0,4]]},
{"id":"B","op":"const","shape":[2,2],"value":[[0,3],[2,0]]},
{"id":"g2","op":"square","inputs":["g"]},
{"id":"fa","op":"matmul","inputs":["g2","A"]},
{"id":"fb","op":"matmul","inputs":["g","B"]},
{"id":"F","op":"add","inputs":["fa","fb"]},
{"id":"L","op":"sum","inputs":["F"]}],
"output":"L"}'
GRAPH=$(printf '%s' "$GRAPH" | tr -d '\n')

# eval_jacobian OF WRT EXPECTED: evaluate at t = 1.5, ask for d OF / d WRT, compare exactly.
eval_jacobian() {
    call POST /v1/graphs/eval "{\"graph\":$GRAPH,\"inputs\":{\"t\":[1.5]},\"wrt\":[\"t\"],\"jacobian\":{\"of\":\"$1\",\"wrt\":\"$2\"}}"
    local got
    got=$(printf '%s' "$ANSWER" | sed -n 's/.*"jacobian":\(\[[][0-9.eE+,-]*\]\).*/\1/p')
    echo "# d$1/d$2 = $got (expected $3)"
    [ "$got" = "$3" ] || fail "Jacobian d$1/d$2 is $got, expected $3"
}

echo "# 1. J_G: how G(t) = [t, t²] moves with t."
eval_jacobian g t '[[1],[3]]'

echo
echo "# 2. J_F at G(1.5) = (1.5, 2.25): how F(x, y) moves with (x, y)."
eval_jacobian F g '[[3,2],[3,18]]'

echo
echo "# 3. J_{F∘G} = J_F · J_G, computed by reverse mode through the whole graph."
eval_jacobian F t '[[9],[57]]'
GRAD=$(printf '%s' "$ANSWER" | sed -n 's/.*"gradients":{"t":\[\([^]]*\)\]}.*/\1/p')
echo "# dL/dt = $GRAD (L = sum of F: 9 + 57 = 66)"
[ "$GRAD" = 66 ] || fail "dL/dt is $GRAD, expected 66"

echo
echo "# Done: J_{F∘G}(1.5) = [[9],[57]] = [[3,2],[3,18]] · [[1],[3]]."
