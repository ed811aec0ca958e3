--- Headless end-to-end check used by tests/test_editors_nvim.py: open a file, enter insert
--- mode at a position, wait for flashls's ghost text and accept it with <Tab> (or, in `popup`
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
  -- `ghost`: wait for inline ghost text, accept with <Tab>. `popup`: the Neovim 0.11 path,
  -- type FLASHLS_NVIM_TYPE (a trigger character), pick the menu item with <C-n><C-y>.
  mode = env.FLASHLS_NVIM_MODE or 'ghost',
  type = env.FLASHLS_NVIM_TYPE or ' ',
}

local report = { stage = 'start', requests = 0, responses = {} }

local function finish(exit_code)
  report.buffer_lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
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

--- Records every inline completion answer, to tell "no answer" from "answer not shown".
local function record_responses(client)
  local request = client.request
  client.request = function(self, method, request_params, handler, bufnr)
    if method == 'textDocument/inlineCompletion' then
      report.requests = report.requests + 1
      local inner = handler
      handler = function(err, result, ctx)
        table.insert(report.responses, { error = err, result = result or vim.NIL })
        return inner(err, result, ctx)
      end
    end
    return request(self, method, request_params, handler, bufnr)
  end
end

local function ghost_text(bufnr)
  local namespace = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not namespace then
    return nil
  end
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

--- The popup path: trigger character typed, menu shown, first item taken with <C-n><C-y>.
local function accept_from_menu(bufnr)
  report.stage = 'menu'
  vim.api.nvim_feedkeys(params.type, 't', false)
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

--- The ghost-text path: wait for the extmark, accept with <Tab>.
local function accept_ghost_text(bufnr)
  report.stage = 'suggestion'
  local started = vim.uv.hrtime()
  local shown = wait_until(params.suggestion_timeout_ms, function()
    return vim.api.nvim_get_mode().mode == 'i' and ghost_text(bufnr)
  end)
  if not shown then
    return fail('no ghost text within ' .. params.suggestion_timeout_ms .. ' ms')
  end
  report.suggestion_ms = (vim.uv.hrtime() - started) / 1e6
  report.ghost_text = shown

  report.stage = 'accept'
  local changedtick = vim.b[bufnr].changedtick
  vim.api.nvim_feedkeys(vim.keycode('<Tab>'), 'm', false)
  if not wait_until(5000, function()
    return vim.b[bufnr].changedtick ~= changedtick and ghost_text(bufnr) == nil
  end) then
    return fail('<Tab> did not change the buffer')
  end
  return true
end

local function main()
  if params.mode == 'popup' then
    vim.o.completeopt = 'menuone,noselect,popup'
  end
  require('flashls').setup({ mode = params.mode, config = { cmd = params.cmd } })
  vim.cmd.edit(vim.fn.fnameescape(params.file))
  local bufnr = vim.api.nvim_get_current_buf()
  report.before_lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)

  report.stage = 'attach'
  local started = vim.uv.hrtime()
  local client = wait_until(params.attach_timeout_ms, function()
    return flashls_client(bufnr)
  end)
  if not client then
    return fail('flashls did not attach within ' .. params.attach_timeout_ms .. ' ms')
  end
  report.attach_ms = (vim.uv.hrtime() - started) / 1e6
  report.server_capabilities = client.server_capabilities
  record_responses(client)

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
