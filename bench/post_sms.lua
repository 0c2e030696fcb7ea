-- wrk script: POST one SMS per request with the API key from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY")
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"phoneNumber":"+14155550123","message":"Benchmark %d","contactId":"c-%d","workspaceId":"%d"}',
    counter, counter, 66338 + (counter % 20))
  return wrk.format(nil, nil, nil, body)
end
