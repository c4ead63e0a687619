#!/usr/bin/env bash
# Smoke test of a running stack through nginx, with curl.
#   BASE_URL=http://localhost:8080 ./test_app.sh     (default http://localhost)
# Re-runnable without a reset: every run uses its own name and email.
# Prints PASS or FAIL per step and stops at the first failure (exit 1).
set -uo pipefail

BASE_URL=${BASE_URL:-http://localhost}
RUN=$(date +%s)-$$-$RANDOM
NAME="Smoke $RUN"
EMAIL="smoke-$RUN@example.com"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
step=0

pass() { step=$((step + 1)); printf 'PASS %2d  %s\n' "$step" "$1"; }
fail() {
    step=$((step + 1))
    printf 'FAIL %2d  %s\n' "$step" "$1"
    [ -s "$WORK/body" ] && printf '         last body: %s\n' "$(head -c 300 "$WORK/body")"
    exit 1
}

# call METHOD PATH [curl args...]: sets $status; body in $WORK/body, headers in $WORK/headers
call() {
    local method=$1 path=$2
    shift 2
    local head=(-X "$method")
    [ "$method" = HEAD ] && head=(-I)
    status=$(curl -s --max-time 10 "${head[@]}" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' "$@" "$BASE_URL$path")
}
header() { grep -i "^$1:" "$WORK/headers" | head -n 1 | cut -d' ' -f2- | tr -d '\r'; }
body_has() { grep -qF -- "$1" "$WORK/body"; }
json_post() { call "$1" "$2" -H 'Content-Type: application/json' --data "$3" "${@:4}"; }

echo "smoke test against $BASE_URL"

call GET /health
[ "$status" = 200 ] && body_has '"status":"healthy"' && pass "GET /health is healthy" || fail "GET /health ($status)"

call GET /users
[ "$status" = 200 ] && body_has '"name":"Alice"' && pass "GET /users lists Alice" || fail "GET /users lists Alice ($status)"

json_post POST /users "{\"name\":\"$NAME\",\"email\":\"$EMAIL\"}"
id=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' "$WORK/body")
[ "$status" = 201 ] && [ -n "$id" ] && body_has '"message":"Created"' && pass "POST /users created id $id" || fail "POST /users ($status)"

call GET "/users/$id"
[ "$status" = 200 ] && body_has "\"email\":\"$EMAIL\"" && pass "GET /users/$id returns the new user" || fail "GET /users/$id ($status)"

json_post PUT "/users/$id" "{\"name\":\"$NAME updated\"}"
[ "$status" = 200 ] && body_has '"message":"Updated"' && pass "PUT /users/$id" || fail "PUT /users/$id ($status)"

seen=""
for tenth in $(seq 0 70); do  # plain GETs: L1 may answer the old copy for up to 5 s
    call GET "/users/$id"
    if body_has "$NAME updated"; then seen=$tenth; break; fi
    sleep 0.1
done
[ -n "$seen" ] && pass "plain GET sees the update once L1 expires: after $((seen / 10)).$((seen % 10)) s (L1 $(header X-Cache-Status))" ||
    fail "plain GET sees the update within 7 s"

json_post PUT "/users/$id" "{\"name\":\"$NAME renamed\"}"
call GET "/users/$id" -H 'Cache-Control: no-cache'
[ "$status" = 200 ] && body_has "$NAME renamed" && pass "GET with Cache-Control: no-cache sees a second update at once (L1 $(header X-Cache-Status))" ||
    fail "GET /users/$id with no-cache sees the update"

call HEAD "/users/$id"
call HEAD "/users/$id"
[ "$status" = 200 ] && [ "$(header X-Cache-Status)" = HIT ] && pass "HEAD twice: the second is an L1 HIT" ||
    fail "HEAD twice: second X-Cache-Status is '$(header X-Cache-Status)'"

call GET "/users?page_size=1000" -H 'Cache-Control: no-cache'
total=$(header X-Pagination | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
last_page=$(( (total + 999) / 1000 ))
call GET "/users?page_size=1000&page=$last_page" -H 'Cache-Control: no-cache'
[ "$status" = 200 ] && body_has "\"email\":\"$EMAIL\"" && pass "the new user appears in the list (page $last_page of $total users)" ||
    fail "the new user appears in the list ($status)"

json_post POST /users "{\"name\":\"Twin $RUN\",\"email\":\"$EMAIL\"}"
[ "$status" = 409 ] && body_has '"code":409' && pass "a duplicate email is refused with 409" || fail "duplicate email ($status)"

json_post POST /users '{"name":""}'
[ "$status" = 422 ] && body_has '"code":422' && pass "an invalid user is refused with 422" || fail "invalid user ($status)"

call DELETE "/users/$id"
[ "$status" = 200 ] && body_has '"message":"Deleted"' && pass "DELETE /users/$id" || fail "DELETE /users/$id ($status)"

call GET "/users/$id" -H 'Cache-Control: no-cache'
[ "$status" = 404 ] && body_has '"code":404' && pass "GET /users/$id after delete is 404" || fail "GET after delete ($status)"

# --- phone -> address book ---
PHONE="+4479111$(printf %05d $((RANDOM % 100000)))"  # 07911 1xxxxx: valid UK mobiles
json_post POST /addr_by_phone "{\"phone\":\"$PHONE\",\"address\":\"1 Smoke Test Lane, London\"}"
tel=$(sed -n 's/.*"phone":"\(tel:[^"]*\)".*/\1/p' "$WORK/body")
[ "$status" = 201 ] && body_has '"detail":"Created"' && [ -n "$tel" ] && pass "POST /addr_by_phone stores $PHONE as $tel" ||
    fail "POST /addr_by_phone ($status)"

call GET "/addr_by_phone?phone=$(printf %s "$tel" | sed 's/+/%2B/')"
[ "$status" = 200 ] && body_has "1 Smoke Test Lane" && pass "GET /addr_by_phone finds it by its tel: spelling" ||
    fail "GET /addr_by_phone ($status)"

json_post PUT /addr_by_phone "{\"phone\":\"$tel\",\"address\":\"2 Smoke Test Lane, London\"}"
[ "$status" = 200 ] && body_has '"detail":"Updated"' && pass "PUT /addr_by_phone changes the address" || fail "PUT /addr_by_phone ($status)"

call GET "/addr_by_phone?phone=12345"
[ "$status" = 422 ] && pass "an invalid phone number is refused with 422" || fail "invalid phone ($status)"

call DELETE "/addr_by_phone?phone=$(printf %s "$PHONE" | sed 's/+/%2B/')"
[ "$status" = 204 ] && [ ! -s "$WORK/body" ] && pass "DELETE /addr_by_phone answers 204 with no body" || fail "DELETE /addr_by_phone ($status)"

call GET "/addr_by_phone?phone=$(printf %s "$PHONE" | sed 's/+/%2B/')" -H 'Cache-Control: no-cache'
[ "$status" = 404 ] && pass "the deleted number is 404" || fail "GET deleted number ($status)"

# --- incidents ---
json_post POST /incident/create "{\"incident_message\":\"Smoke test incident $RUN\",\"incident_type\":\"new\",\"source\":\"monitoring\"}"
incident=$(sed -n 's/.*"incident_id":\([0-9]*\).*/\1/p' "$WORK/body")
[ "$status" = 201 ] && [ -n "$incident" ] && pass "POST /incident/create made incident $incident" || fail "POST /incident/create ($status)"

call PATCH "/incident/update-status?incident_id=$incident&status=completed"
[ "$status" = 200 ] && body_has '"incident_type":"completed"' && pass "PATCH /incident/update-status completes it" ||
    fail "PATCH /incident/update-status ($status)"

call GET "/incident/get?status=completed&source=monitoring&limit=100" -H 'Cache-Control: no-cache'
[ "$status" = 200 ] && body_has "\"incident_id\":$incident," && pass "GET /incident/get?status=completed lists it" ||
    fail "GET /incident/get ($status)"

call GET "/incident/get?page=0"
[ "$status" = 422 ] && pass "page=0 is refused with 422" || fail "page=0 ($status)"

# --- accounts and orders ---
json_post POST /api/user/register "{\"email\":\"buyer-$RUN@example.com\",\"password\":\"smoke test password\"}"
account=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' "$WORK/body")
[ "$status" = 201 ] && [ -n "$account" ] && ! body_has password && pass "POST /api/user/register made account $account" ||
    fail "POST /api/user/register ($status)"

call POST /api/user/token/ --data-urlencode "username=buyer-$RUN@example.com" --data-urlencode "password=smoke test password"
token=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$WORK/body")
[ "$status" = 200 ] && [ -n "$token" ] && pass "POST /api/user/token/ gives a bearer token" || fail "POST /api/user/token/ ($status)"
auth=(-H "Authorization: Bearer $token")

json_post POST /api/orders/ '{"items":[{"name":"Widget","quantity":2,"price":9.99}],"total_price":19.98}' "${auth[@]}"
order=$(sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p' "$WORK/body")
[ "$status" = 201 ] && body_has '"status":"PENDING"' && [ -n "$order" ] && pass "POST /api/orders/ placed order $order" ||
    fail "POST /api/orders/ ($status)"

processed=""
for second in $(seq 1 60); do  # the worker processes it in the background; no time is promised: wait long
    sleep 1
    call GET "/api/orders/$order/" "${auth[@]}"
    if [ "$status" = 200 ] && ! body_has '"processed_at":null'; then processed=$second; break; fi
done
[ -n "$processed" ] && [ "$(header Cache-Control)" = "private, no-store" ] &&
    pass "the worker processed it within ${processed} s; the answer is private, no-store" || fail "order processed by the worker"

call PATCH "/api/orders/$order/" -H 'Content-Type: application/json' --data '{"status":"PAID"}' "${auth[@]}"
[ "$status" = 200 ] && body_has '"status":"PAID"' && pass "PATCH /api/orders/$order/ marks it PAID" || fail "PATCH order ($status)"

call GET "/api/orders/user/$account/" "${auth[@]}"
[ "$status" = 200 ] && body_has "\"id\":\"$order\"" && pass "GET /api/orders/user/$account/ lists it" || fail "list own orders ($status)"

call GET "/api/orders/user/$((account + 1))/" "${auth[@]}"
[ "$status" = 403 ] && pass "another account's orders are 403" || fail "another account's orders ($status)"

call GET "/api/orders/$order/"
[ "$status" = 401 ] && pass "no token: 401" || fail "order without a token ($status)"

# --- docs ---
call GET /openapi.json
[ "$status" = 200 ] && body_has '"/api/orders/"' && body_has '"/incident/get"' && pass "GET /openapi.json describes every domain" ||
    fail "GET /openapi.json ($status)"

call GET /docs
[ "$status" = 200 ] && body_has "swagger-ui" && pass "GET /docs serves Swagger UI" || fail "GET /docs ($status)"

echo "$step passed, 0 failed"
