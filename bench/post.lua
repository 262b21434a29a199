-- wrk script: POST a typical small chat request.
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"model":"chat","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about fail-over."}],"temperature":0.7}'
