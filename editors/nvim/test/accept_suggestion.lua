--- Headless end-to-end check used by tests/test_editors_nvim.py: open a file (after resting in
--- another one, if asked), rest on a position until flashls has warmed it (if asked), enter
--- insert mode there, type a character (if asked), wait for flashls's ghost text (and, if asked,
--- for the whole of a suggestion cut by the time budget) and accept it with <Tab> (or, in `popup`
--- mode, the Neovim 0.11 path, take it from the completion menu), write the file and report
--- what happened as JSON. Parameters come from FLASHLS_NVIM_* variables.
---
---   FLASHLS_NVIM_CMD='["flashls","serve"]' FLASHLS_NVIM_FILE=x.py FLASHLS_NVIM_LINE=3 \
---   FLASHLS_NVIM_RESULT=out.json nvim --headless --clean -u accept_suggestion.lua

local here = vim.fs.dirname(vim.fs.abspath(debug.getinfo(1, 'S').source:sub(2)))
vim.opt.runtimepath:prepend(vim.fs.dirname(here))

local env = vim.env
local params = {
  cmd = vim.json.decode(env.FLASHLS_NVIM_CMD or '["flashls","serve"]'),
  file = assert(env.FLASHLS_NVIM_FILE, 'FLASHLS_NVIM_FILE is required'),
  line = tonumber(env.FLASHLS_NVIM_LINE or '1'), -- 1-based
  col = env.FLASHLS_NVIM_COL and tonumber(env.FLASHLS_NVIM_COL) or nil, -- 0-based bytes; nil = end
  result = assert(env.FLASHLS_NVIM_RESULT, 'FLASHLS_NVIM_RESULT is required'),
  attach_timeout_ms = tonumber(env.FLASHLS_NVIM_ATTACH_TIMEOUT_MS or '30000'),
  suggestion_timeout_ms = tonumber(env.FLASHLS_NVIM_SUGGESTION_TIMEOUT_MS or '20000'),
  -- `auto`, `live` or `builtin`: wait for ghost text (flashls's own, or Neovim 0.12's),
  -- accept with <Tab>. `popup`: the Neovim 0.11 path,
  -- type FLASHLS_NVIM_TYPE (a trigger character, default a space), pick the menu item with
  -- <C-n><C-y>.
  mode = env.FLASHLS_NVIM_MODE or 'auto',
  -- Ghost mode: typed once after entering insert mode; the wait for ghost text starts there.
  type = env.FLASHLS_NVIM_TYPE,
  -- Opened first, with the cursor in its middle for FIRST_REST_MS, before FLASHLS_NVIM_FILE.
  first_file = env.FLASHLS_NVIM_FIRST_FILE,
  first_rest_ms = tonumber(env.FLASHLS_NVIM_FIRST_REST_MS or '500'),
  -- In normal mode on the position, wait up to this long for the server's `warm` status.
  rest_ms = tonumber(env.FLASHLS_NVIM_REST_MS or '0'),
  -- Ghost mode: after the first ghost text, wait for `flashls/suggestionFinished` and for
  -- the ghost text that the plugin's new request (no keystroke) brings.
  wait_finished = env.FLASHLS_NVIM_WAIT_FINISHED == '1',
  -- Ghost mode: after the first ghost text, type this many of its characters, one every
  -- TYPE_INTERVAL_MS, noting after each whether a request went out and what shows.
  type_along = tonumber(env.FLASHLS_NVIM_TYPE_ALONG or '0'),
  type_interval_ms = tonumber(env.FLASHLS_NVIM_TYPE_INTERVAL_MS or '100'),
  -- Press <M-]> once the suggestion shows, and accept the one it cycles to.
  cycle = env.FLASHLS_NVIM_CYCLE == '1',
  -- Before anything else in the file: yank its first two lines (`2yy`) in normal mode.
  yank = env.FLASHLS_NVIM_YANK == '1',
  -- Keys that accept the suggestion, pressed one after another (a JSON list; `<Tab>` when
  -- unset), each once a suggestion shows; after each, what it left on screen is noted.
  accept_keys = env.FLASHLS_NVIM_ACCEPT_KEYS and vim.json.decode(env.FLASHLS_NVIM_ACCEPT_KEYS),
}

local clock_start = vim.uv.hrtime()

--- Milliseconds since the driver started: every time in the report is on this clock.
local function now_ms()
  return (vim.uv.hrtime() - clock_start) / 1e6
end

local report = {
  stage = 'start',
  requests = {}, -- every textDocument/inlineCompletion: file, position, times, what showed
  statuses = {}, -- every flashls/status notification, with its time
  finished = {}, -- every flashls/suggestionFinished notification, with its time
  shown = {}, -- each new ghost text in FLASHLS_NVIM_FILE's buffer, with its time
  focus = {}, -- every textDocument/didFocus the plugin sent, with its time
  yanks = {}, -- every flashls/didYank the plugin sent
}
local buffers = {}

local function finish(exit_code)
  report.buffer_lines = vim.api.nvim_buf_get_lines(buffers.file or 0, 0, -1, false)
  if buffers.first and vim.api.nvim_buf_is_loaded(buffers.first) then
    report.first_lines = vim.api.nvim_buf_get_lines(buffers.first, 0, -1, false)
  end
  local handle = assert(io.open(params.result, 'w'))
  handle:write(vim.json.encode(report))
  handle:close()
  vim.cmd((exit_code == 0 and 'qall!') or ('cquit ' .. exit_code))
end

local function fail(message)
  report.error = message
  finish(1)
end

--- Coroutine-friendly sleep: the main loop keeps running (typeahead, LSP, timers).
local function sleep(ms)
  local co = coroutine.running()
  vim.defer_fn(function()
    assert(coroutine.resume(co))
  end, ms)
  coroutine.yield()
end

local function wait_until(timeout_ms, predicate)
  local deadline = vim.uv.now() + timeout_ms
  while vim.uv.now() < deadline do
    local value = predicate()
    if value then
      return value
    end
    sleep(20)
  end
  return nil
end

local function flashls_client(bufnr)
  local client = vim.lsp.get_clients({ bufnr = bufnr, name = 'flashls' })[1]
  return client and client.initialized and client or nil
end

local function file_of(uri)
  return type(uri) == 'string' and vim.fs.basename(vim.uri_to_fname(uri)) or nil
end

local function ghost_text_in(bufnr, namespace)
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, namespace, 0, -1, { details = true })) do
    local details = mark[4]
    local lines = { table.concat(vim.tbl_map(function(chunk)
      return chunk[1]
    end, details.virt_text or {})) }
    for _, virt_line in ipairs(details.virt_lines or {}) do
      table.insert(lines, table.concat(vim.tbl_map(function(chunk)
        return chunk[1]
      end, virt_line)))
    end
    local text = table.concat(lines, '\n')
    if text ~= '' then
      report.ghost_position = details.virt_text_pos
      return text
    end
  end
  return nil
end

--- The ghost text shown in `bufnr`: flashls's own (live mode) or Neovim's (builtin mode).
local function ghost_text(bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) then
    return nil
  end
  for _, name in ipairs({ 'flashls.ghost', 'nvim.lsp.inline_completion' }) do
    local namespace = vim.api.nvim_get_namespaces()[name]
    local text = namespace and ghost_text_in(bufnr, namespace)
    if text then
      report.ghost_namespace = name
      return text
    end
  end
  return nil
end

--- Notes a ghost text in FLASHLS_NVIM_FILE's buffer when it differs from the last one noted.
local function note_shown()
  local text = buffers.file and ghost_text(buffers.file)
  local last = report.shown[#report.shown]
  if text and (not last or last.text ~= text) then
    table.insert(report.shown, { text = text, t_ms = now_ms() })
  end
  return text
end

--- Records every inline completion request and its answer (the handler draws the ghost
--- text at once, so the time it returns is when the suggestion became visible), and every
--- `textDocument/didFocus`.
local function record_traffic(client)
  local request = client.request
  client.request = function(self, method, request_params, handler, bufnr)
    if method == 'textDocument/inlineCompletion' then
      local entry = {
        file = file_of(request_params.textDocument.uri),
        position = request_params.position,
        sent_ms = now_ms(),
      }
      table.insert(report.requests, entry)
      local inner = handler
      handler = function(err, result, ctx)
        entry.error, entry.result = err, result or vim.NIL
        local value = inner(err, result, ctx)
        entry.handled_ms = now_ms()
        if entry.file == vim.fs.basename(params.file) then
          entry.shown = note_shown()
        end
        return value
      end
    end
    return request(self, method, request_params, handler, bufnr)
  end
  local notify = client.notify
  client.notify = function(self, method, notify_params)
    if method == 'textDocument/didFocus' then
      table.insert(report.focus, {
        file = file_of(notify_params.textDocument.uri), position = notify_params.position,
        t_ms = now_ms(),
      })
    end
    if method == 'flashls/didYank' then
      table.insert(report.yanks, {
        file = file_of(notify_params.textDocument.uri), text = notify_params.text,
      })
    end
    return notify(self, method, notify_params)
  end
end

local function on_status(_, status)
  table.insert(report.statuses, {
    t_ms = now_ms(), state = status.state, message = status.message, file = file_of(status.uri),
    latency_ms = status.latencyMs, source = status.source, timings = status.timings,
  })
end

local function on_finished(err, notification, ctx)
  table.insert(report.finished, {
    t_ms = now_ms(), file = file_of(vim.tbl_get(notification or {}, 'textDocument', 'uri')),
    position = notification and notification.position,
  })
  return require('flashls').suggestion_finished(err, notification, ctx)
end

--- Opens a file and waits for flashls to attach to it; its buffer, or nil after `fail`.
local function open(path)
  vim.cmd.edit(vim.fn.fnameescape(path))
  local bufnr = vim.api.nvim_get_current_buf()
  report.stage = 'attach'
  local started = now_ms()
  local client = wait_until(params.attach_timeout_ms, function()
    return flashls_client(bufnr)
  end)
  if not client then
    return fail('flashls did not attach to ' .. path .. ' within ' .. params.attach_timeout_ms
      .. ' ms')
  end
  report.attach_ms = report.attach_ms or (now_ms() - started)
  if not report.server_capabilities then
    report.server_capabilities = client.server_capabilities
    record_traffic(client)
  end
  return bufnr
end

--- The first file: the cursor rests in its middle, as a user reads before moving on.
local function visit_first_file()
  buffers.first = open(params.first_file)
  if not buffers.first then
    return false
  end
  report.first_before = vim.api.nvim_buf_get_lines(buffers.first, 0, -1, false)
  local middle = math.max(1, math.floor(#report.first_before / 2))
  vim.api.nvim_win_set_cursor(0, { middle, 0 })
  sleep(params.first_rest_ms)
  return true
end

--- In normal mode on the position, wait (bounded) for the server to report it warm.
local function rest_until_warm()
  report.stage = 'rest'
  vim.api.nvim_win_set_cursor(0, { params.line, params.col or 0 })
  local started = now_ms()
  local file = vim.fs.basename(params.file)
  local warm = wait_until(params.rest_ms, function()
    for _, status in ipairs(report.statuses) do
      if status.state == 'warm' and status.file == file and status.t_ms >= started then
        return status
      end
    end
  end)
  report.rest = { warm = warm ~= nil, ms = now_ms() - started, status = warm }
end

local function enter_insert_mode()
  local line = vim.api.nvim_buf_get_lines(0, params.line - 1, params.line, true)[1]
  local col = params.col or #line
  report.cursor = { params.line, col }
  if col >= #line then
    vim.api.nvim_win_set_cursor(0, { params.line, 0 })
    vim.api.nvim_feedkeys('A', 'n', false)
  else
    vim.api.nvim_win_set_cursor(0, { params.line, col })
    vim.api.nvim_feedkeys('i', 'n', false)
  end
end

--- Types FLASHLS_NVIM_TYPE; the keystroke's time is when Neovim takes the character.
local function type_character(bufnr)
  vim.api.nvim_create_autocmd('InsertCharPre', {
    buffer = bufnr,
    once = true,
    callback = function()
      report.keystroke_ms = now_ms()
    end,
  })
  vim.api.nvim_feedkeys(params.type, 'n', false)
  if not wait_until(5000, function()
    return report.keystroke_ms
  end) then
    return fail('the typed character did not reach insert mode')
  end
  return true
end

--- The popup path: trigger character typed, menu shown, first item taken with <C-n><C-y>.
local function accept_from_menu(bufnr)
  report.stage = 'menu'
  vim.api.nvim_feedkeys(params.type or ' ', 't', false)
  local started = vim.uv.hrtime()
  local items = wait_until(params.suggestion_timeout_ms, function()
    local info = vim.fn.complete_info({ 'items', 'selected' })
    return vim.fn.pumvisible() == 1 and #info.items > 0 and info.items
  end)
  if not items then
    return fail('no completion menu within ' .. params.suggestion_timeout_ms .. ' ms')
  end
  report.suggestion_ms = (vim.uv.hrtime() - started) / 1e6
  report.menu_words = vim.tbl_map(function(item)
    return item.word
  end, items)
  report.stage = 'accept'
  local changedtick = vim.b[bufnr].changedtick
  vim.api.nvim_feedkeys(vim.keycode('<C-n><C-y>'), 'n', false)
  if not wait_until(5000, function()
    return vim.fn.pumvisible() == 0 and vim.b[bufnr].changedtick ~= changedtick
  end) then
    return fail('<C-n><C-y> did not take the menu item')
  end
  return true
end

--- The first request for the file sent at or after `since_ms` whose answer showed ghost text.
local function shown_since(since_ms)
  local file = vim.fs.basename(params.file)
  for _, entry in ipairs(report.requests) do
    if entry.file == file and entry.sent_ms >= since_ms and entry.shown then
      return entry
    end
  end
end

--- After the first suggestion: the server's word that it finished a cut one, then the ghost
--- text answering the request the plugin made for it (no keystroke in between).
local function wait_for_finished_suggestion(started_ms)
  report.stage = 'finished'
  local entry = wait_until(params.suggestion_timeout_ms, function()
    local finished = report.finished[1]
    return finished and vim.api.nvim_get_mode().mode == 'i' and shown_since(finished.t_ms)
  end)
  if not entry then
    return fail('no ghost text after flashls/suggestionFinished within '
      .. params.suggestion_timeout_ms .. ' ms')
  end
  report.finished_ms = entry.handled_ms - started_ms
  return true
end

--- Types the shown suggestion's next characters one by one, as a user who agrees with it.
local function type_along(bufnr)
  report.stage = 'type_along'
  report.typed_along = {}
  for _ = 1, params.type_along do
    local shown = ghost_text(bufnr)
    if not shown then
      return fail('no ghost text to type along after ' .. #report.typed_along .. ' characters')
    end
    local requests = #report.requests
    local character = shown:sub(1, 1)
    vim.api.nvim_feedkeys(character, 'n', false)
    sleep(params.type_interval_ms)
    table.insert(report.typed_along, {
      character = character, requests = #report.requests - requests,
      shown = ghost_text(bufnr) or vim.NIL,
    })
  end
  return true
end

--- Presses FLASHLS_NVIM_ACCEPT_KEYS in turn, each once a suggestion shows, noting what it
--- took (the buffer's change) and what showed at once after it.
local function accept_with_keys(bufnr)
  report.stage = 'accept'
  report.accepted = {}
  for index, key in ipairs(params.accept_keys) do
    if index > 1 and not wait_until(params.suggestion_timeout_ms, function()
      return ghost_text(bufnr)
    end) then
      return fail('no ghost text to accept with ' .. key)
    end
    local shown = ghost_text(bufnr)
    local changedtick = vim.b[bufnr].changedtick
    vim.api.nvim_feedkeys(vim.keycode(key), 'm', false)
    if not wait_until(5000, function()
      return vim.b[bufnr].changedtick ~= changedtick
    end) then
      return fail(key .. ' did not change the buffer')
    end
    table.insert(report.accepted, {
      key = key, shown = shown, cursor = vim.api.nvim_win_get_cursor(0),
      lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false),
      ghost_after = ghost_text(bufnr) or vim.NIL,
    })
  end
  return true
end

--- The ghost-text path: wait for the answer to a request made after the keystroke (or after
--- entering insert mode) to show, accept it with <Tab>.
local function accept_ghost_text(bufnr)
  report.stage = 'suggestion'
  local started = now_ms()
  if params.type then
    if not type_character(bufnr) then
      return
    end
    started = report.keystroke_ms
  end
  local entry = wait_until(params.suggestion_timeout_ms, function()
    return vim.api.nvim_get_mode().mode == 'i' and shown_since(started)
  end)
  if not entry then
    return fail('no ghost text within ' .. params.suggestion_timeout_ms .. ' ms')
  end
  report.suggestion_ms = entry.handled_ms - started
  if params.type_along > 0 and not type_along(bufnr) then
    return
  end
  if params.wait_finished and not wait_for_finished_suggestion(started) then
    return
  end
  if params.cycle then
    report.stage = 'cycle'
    report.first_ghost_text = ghost_text(bufnr)
    vim.api.nvim_feedkeys(vim.keycode('<M-]>'), 'm', false)
    if not wait_until(params.suggestion_timeout_ms, function()
      local shown = ghost_text(bufnr)
      return shown ~= nil and shown ~= report.first_ghost_text
    end) then
      return fail('<M-]> showed no other suggestion')
    end
  end
  report.ghost_text = ghost_text(bufnr)
  if params.accept_keys then
    return accept_with_keys(bufnr)
  end

  report.stage = 'accept'
  local changedtick = vim.b[bufnr].changedtick
  vim.api.nvim_feedkeys(vim.keycode('<Tab>'), 'm', false)
  if not wait_until(5000, function()
    -- The suggestion's text now ends at the cursor. (Live mode may show the next suggestion
    -- at once, and it may read the same as the accepted one.)
    if vim.b[bufnr].changedtick == changedtick then
      return false
    end
    local accepted = vim.split(report.ghost_text, '\n', { plain = true })
    local last = accepted[#accepted]
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1]
    return line:sub(1, col):sub(-#last) == last
  end) then
    return fail('<Tab> did not change the buffer')
  end
  return true
end

local function main()
  if params.mode == 'popup' then
    vim.o.completeopt = 'menuone,noselect,popup'
  end
  require('flashls').setup({ mode = params.mode, config = {
    cmd = params.cmd,
    handlers = { ['flashls/status'] = on_status, ['flashls/suggestionFinished'] = on_finished },
  } })
  if params.first_file and not visit_first_file() then
    return
  end
  buffers.file = open(params.file)
  if not buffers.file then
    return
  end
  local bufnr = buffers.file
  report.before_lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  if params.yank then
    vim.api.nvim_win_set_cursor(0, { 1, 0 })
    vim.cmd('normal! 2yy')
  end
  if params.rest_ms > 0 then
    rest_until_warm()
  end

  enter_insert_mode()
  local accept = params.mode == 'popup' and accept_from_menu or accept_ghost_text
  if not accept(bufnr) then
    return
  end
  report.cursor_after = vim.api.nvim_win_get_cursor(0)

  report.stage = 'write'
  vim.api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
  wait_until(2000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  vim.cmd.write()
  report.stage = 'done'
  finish(0)
end

-- Scheduled, not run inside the VimEnter autocmd, so that :edit fires FileType normally.
vim.api.nvim_create_autocmd('VimEnter', {
  once = true,
  callback = vim.schedule_wrap(function()
    coroutine.wrap(function()
      local ok, err = xpcall(main, debug.traceback)
      if not ok then
        fail(err)
      end
    end)()
  end),
})
