--- flashls for Neovim: enables the `flashls` server (config in `lsp/flashls.lua`),
--- shows its suggestions as ghost text and maps keys to accept them (all, a word, a line).
---
--- Modes:
--- - `live` (the default, Neovim 0.10+): ghost text drawn by `flashls.ghost`, asked for at
---   every keystroke and kept while you type along it.
--- - `builtin` (Neovim 0.12+): Neovim's own `vim.lsp.inline_completion`, which asks only
---   after 200 ms without a keystroke.
--- - `popup`: `textDocument/completion` in the menu (`vim.lsp.completion`, 0.11+; omnifunc
---   <C-x><C-o> on 0.10).

local M = {}

--- Whether ghost text is on; flipped by `:FlashlsToggle`.
M.enabled = true

---@class flashls.Options
---@field mode? 'auto'|'live'|'builtin'|'popup' `auto` is `live`; `ghost` is an old name of `builtin`.
---@field accept_key? string|false Insert-mode key accepting the ghost text (default `<Tab>`).
---@field accept_word_key? string|false Accept its next word (default `<C-Right>`).
---@field accept_line_key? string|false Accept the rest of its line (default `<S-Tab>`).
---@field next_key? string|false Show the next suggestion (default `<M-]>`).
---@field prev_key? string|false Show the previous suggestion (default `<M-[>`).
---@field config? vim.lsp.Config Merged over `lsp/flashls.lua` (cmd, settings, ...).

---@type flashls.Options
M.defaults = {
  mode = 'auto',
  accept_key = '<Tab>',
  accept_word_key = '<C-Right>',
  accept_line_key = '<S-Tab>',
  next_key = '<M-]>',
  prev_key = '<M-[>',
  config = nil,
}

local ghost = require('flashls.ghost')

local function has_inline_completion()
  return vim.lsp.inline_completion ~= nil
end

--- `live`, `builtin` or `popup`: what `opts.mode` asks for, as far as this Neovim allows.
---@param opts flashls.Options
local function mode_of(opts)
  if opts.mode == 'popup' then
    return 'popup'
  end
  if (opts.mode == 'builtin' or opts.mode == 'ghost') and has_inline_completion() then
    return 'builtin'
  end
  return 'live'
end

--- The accept keys and what each takes of the suggestion (nil: all of it).
---@param opts flashls.Options
---@return { key: string, unit?: 'word'|'line', desc: string }[]
local function accept_keys(opts)
  local keys = {}
  for _, entry in ipairs({
    { opts.accept_key, nil, 'flashls: accept the suggestion' },
    { opts.accept_word_key, 'word', 'flashls: accept the next word of the suggestion' },
    { opts.accept_line_key, 'line', 'flashls: accept the rest of the line of the suggestion' },
  }) do
    if entry[1] then
      keys[#keys + 1] = { key = entry[1], unit = entry[2], desc = entry[3] }
    end
  end
  return keys
end

--- Live mode: the accept/next/prev keys on `flashls.ghost`; an accept key does what it
--- does without flashls when no suggestion shows.
---@param bufnr integer
---@param opts flashls.Options
local function map_live_keys(bufnr, opts)
  for _, accept in ipairs(accept_keys(opts)) do
    local command = ('<Cmd>lua require("flashls.ghost").accept(nil, %s)<CR>'):format(
      accept.unit and ("'" .. accept.unit .. "'") or 'nil')
    vim.keymap.set('i', accept.key, function()
      return ghost.visible(bufnr) and command or accept.key
    end, { buffer = bufnr, expr = true, desc = accept.desc })
  end
  for key, count in pairs({ [opts.next_key or ''] = 1, [opts.prev_key or ''] = -1 }) do
    if key ~= '' then
      vim.keymap.set('i', key, function()
        ghost.select(bufnr, count)
      end, { buffer = bufnr, desc = 'flashls: cycle the suggestions' })
    end
  end
end

--- Builtin mode: takes the next `unit` of Neovim's current inline completion at the
--- cursor (its text after what was typed since it was asked for); false if none shows.
--- Neovim hides the rest and asks again after its debounce.
---@param unit 'word'|'line'
---@return boolean
local function accept_builtin_part(unit)
  return vim.lsp.inline_completion.get({ on_accept = function(item)
    local text = item.insert_text
    text = type(text) == 'string' and text or text.value
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    row = row - 1
    local typed = ''
    if item.range then
      local start_row, start_col = unpack(item.range.start:to_extmark())
      if start_row == row and start_col <= col then
        typed = vim.api.nvim_buf_get_text(0, row, start_col, row, col, {})[1]
      end
    end
    local rest = vim.startswith(text, typed) and text:sub(#typed + 1) or text
    ghost.insert(vim.api.nvim_get_current_buf(), row, col, ghost.part(rest, unit))
  end })
end

--- Builtin mode: the accept/next/prev keys on `vim.lsp.inline_completion`.
---@param bufnr integer
---@param opts flashls.Options
local function map_keys(bufnr, opts)
  for _, accept in ipairs(accept_keys(opts)) do
    vim.keymap.set('i', accept.key, function()
      local accepted
      if accept.unit then
        accepted = accept_builtin_part(accept.unit)
      else
        accepted = vim.lsp.inline_completion.get()
      end
      if not accepted then
        return accept.key
      end
    end, { buffer = bufnr, expr = true, desc = accept.desc })
  end
  if opts.next_key then
    vim.keymap.set('i', opts.next_key, function()
      vim.lsp.inline_completion.select({ count = 1 })
    end, { buffer = bufnr, desc = 'flashls: next suggestion' })
  end
  if opts.prev_key then
    vim.keymap.set('i', opts.prev_key, function()
      vim.lsp.inline_completion.select({ count = -1 })
    end, { buffer = bufnr, desc = 'flashls: previous suggestion' })
  end
end

-- How long the cursor rests before the server is told where the user looks.
local FOCUS_DEBOUNCE_MS = 250
local focus_timer = nil

--- Tells flashls which buffer is in front and where its cursor rests
--- (`textDocument/didFocus`), so it evaluates that place while the user reads.
---@param bufnr integer
local function report_focus(bufnr)
  if focus_timer then
    focus_timer:stop()
  else
    focus_timer = vim.uv.new_timer()
  end
  focus_timer:start(FOCUS_DEBOUNCE_MS, 0, vim.schedule_wrap(function()
    if not M.enabled or not vim.api.nvim_buf_is_valid(bufnr)
        or bufnr ~= vim.api.nvim_get_current_buf() then
      return
    end
    for _, client in ipairs(vim.lsp.get_clients({ name = 'flashls', bufnr = bufnr })) do
      local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
      ghost.call(client, 'notify', 'textDocument/didFocus', params)
    end
  end))
end

---@param bufnr integer
local function track_focus(bufnr)
  vim.api.nvim_create_autocmd({ 'BufEnter', 'CursorMoved', 'InsertEnter' }, {
    group = vim.api.nvim_create_augroup('flashls.focus.' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function(args)
      report_focus(args.buf)
    end,
  })
  report_focus(bufnr)
end

--- Tells flashls what the user yanks in `bufnr` (`flashls/didYank`): with the `recent`
--- context source, the latest yanks go into the prompt, as llama.vim keeps yanked chunks.
---@param bufnr integer
local function track_yanks(bufnr)
  vim.api.nvim_create_autocmd('TextYankPost', {
    group = vim.api.nvim_create_augroup('flashls.yank.' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function(args)
      local event = vim.v.event
      if not M.enabled or event.operator ~= 'y' then
        return -- deletes and changes also fill registers; only copies are context
      end
      local params = {
        textDocument = { uri = vim.uri_from_bufnr(args.buf) },
        text = table.concat(event.regcontents, '\n'),
      }
      for _, client in ipairs(vim.lsp.get_clients({ name = 'flashls', bufnr = args.buf })) do
        ghost.call(client, 'notify', 'flashls/didYank', params)
      end
    end,
  })
end

--- Turns ghost text on in `bufnr` if it is the current buffer (and suggestions are on), off
--- otherwise. Neovim 0.12.0-dev's inline completion listens to `InsertEnter`/`CursorMovedI`
--- in every buffer, so each buffer where it is on would ask for a suggestion at the cursor of
--- whichever buffer you type in, and the model (one at a time) would answer those first.
---@param bufnr integer
local function enable_ghost_text_if_current(bufnr)
  local current = bufnr == vim.api.nvim_get_current_buf()
  vim.lsp.inline_completion.enable(M.enabled and current, { bufnr = bufnr })
end

---@param bufnr integer
local function ghost_text_follows_current_buffer(bufnr)
  vim.api.nvim_create_autocmd({ 'BufEnter', 'BufLeave' }, {
    group = vim.api.nvim_create_augroup('flashls.ghost.' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function(args)
      local entering = args.event == 'BufEnter'
      vim.lsp.inline_completion.enable(M.enabled and entering, { bufnr = args.buf })
    end,
  })
  enable_ghost_text_if_current(bufnr)
end

-- The server's word that a suggestion cut by its time budget has been finished.
local FINISHED_NOTIFICATION = 'flashls/suggestionFinished'
local warned_no_request = false

--- Asks for inline completion in `bufnr` again, as a keystroke would. Neovim 0.12 has no
--- public call for it: this runs the `CursorMovedI` autocmd of its inline completion
--- (group `nvim.lsp.inline_completion:<bufnr>`), which requests after its 200 ms debounce.
---@param bufnr integer
local function request_inline_completion(bufnr)
  local group = ('nvim.lsp.inline_completion:%d'):format(bufnr)
  local found, autocmds =
    pcall(vim.api.nvim_get_autocmds, { group = group, event = 'CursorMovedI' })
  if found and #autocmds > 0 then
    vim.api.nvim_exec_autocmds('CursorMovedI', { group = group, buffer = bufnr })
  elseif not warned_no_request then
    warned_no_request = true
    vim.notify('flashls: this Neovim has no autocmd group ' .. group .. ' to ask for '
      .. 'inline completion again; a finished suggestion shows at the next keystroke',
      vim.log.levels.WARN)
  end
end

--- Handler of `flashls/suggestionFinished`: a suggestion cut by the time budget is whole
--- now. If its buffer is in front, in insert mode, with the cursor where the suggestion was
--- asked for, ask again: the server answers from its cache with all of it.
---@param _ lsp.ResponseError?
---@param params { textDocument: { uri: string }, position: lsp.Position }?
---@param ctx lsp.HandlerContext
function M.suggestion_finished(_, params, ctx)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if not (M.enabled and client and params and params.position)
      or not vim.startswith(vim.api.nvim_get_mode().mode, 'i')
      or vim.uri_from_bufnr(bufnr) ~= vim.tbl_get(params, 'textDocument', 'uri') then
    return
  end
  local here = vim.lsp.util.make_position_params(0, client.offset_encoding).position
  if here.line ~= params.position.line or here.character ~= params.position.character then
    return
  end
  if ghost.attached(bufnr) then
    ghost.request(bufnr, true)
  elseif has_inline_completion() and vim.lsp.inline_completion.is_enabled({ bufnr = bufnr }) then
    request_inline_completion(bufnr)
  end
end

---@param opts flashls.Options
local function on_attach(opts)
  vim.api.nvim_create_autocmd('LspAttach', {
    group = vim.api.nvim_create_augroup('flashls.attach', { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= 'flashls' then
        return
      end
      track_focus(args.buf)
      track_yanks(args.buf)
      local mode = mode_of(opts)
      if mode == 'live' then
        ghost.attach(args.buf, client.id, function()
          return M.enabled
        end)
        map_live_keys(args.buf, opts)
      elseif mode == 'builtin' then
        ghost_text_follows_current_buffer(args.buf)
        map_keys(args.buf, opts)
      elseif vim.lsp.completion then
        -- The server's trigger characters open the menu as you type; <C-y> accepts.
        vim.lsp.completion.enable(true, client.id, args.buf, { autotrigger = true })
      end
    end,
  })
end

--- Neovim 0.10 has no `vim.lsp.config`: start the server per buffer from the same table.
---@param opts flashls.Options
local function start_without_config_api(opts)
  local file = vim.api.nvim_get_runtime_file('lsp/flashls.lua', false)[1]
  local config = vim.tbl_deep_extend('force', dofile(file), opts.config or {})
  vim.api.nvim_create_autocmd('FileType', {
    group = vim.api.nvim_create_augroup('flashls.start', { clear = true }),
    pattern = config.filetypes,
    callback = function(args)
      local root = vim.fs.root(args.buf, config.root_markers)
      vim.lsp.start(vim.tbl_extend('force', config, { name = 'flashls', root_dir = root }))
    end,
  })
end

--- Enables flashls with ghost text (live, or Neovim's own on 0.12+) or popup completion.
---@param opts? flashls.Options
function M.setup(opts)
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  local mode = mode_of(opts)
  if mode ~= 'builtin' then
    -- The server offers completion items only to clients without inline completion (else
    -- an editor would show each suggestion twice): popup mode asks for them, live mode
    -- (which shows them itself, on any Neovim) for none.
    opts.config = vim.tbl_deep_extend('keep', opts.config or {}, { settings = { flashls = {
      completion_fallback = mode == 'popup' and 'always' or 'never' } } })
  end
  opts.config = vim.tbl_deep_extend('keep', opts.config or {},
    { handlers = { [FINISHED_NOTIFICATION] = M.suggestion_finished } })
  on_attach(opts)
  if vim.lsp.config == nil then
    start_without_config_api(opts)
    return
  end
  vim.lsp.config('flashls', opts.config)
  vim.lsp.enable('flashls')
end

--- Accepts the next word of the suggestion shown in the current buffer (live or builtin
--- mode); false if none shows. For mappings of your own:
--- `vim.keymap.set('i', '<M-w>', require('flashls').accept_word)`.
---@return boolean
function M.accept_word()
  return M.accept_part('word')
end

--- Accepts the rest of the current line of the suggestion shown in the current buffer;
--- false if none shows.
---@return boolean
function M.accept_line()
  return M.accept_part('line')
end

--- Accepts the next `word` or `line` of the suggestion shown in the current buffer.
---@param unit 'word'|'line'
---@return boolean
function M.accept_part(unit)
  local bufnr = vim.api.nvim_get_current_buf()
  if ghost.attached(bufnr) then
    return ghost.accept(bufnr, unit)
  end
  return has_inline_completion() and accept_builtin_part(unit)
end

--- Turns ghost text on or off in every buffer flashls serves.
function M.toggle()
  M.enabled = not M.enabled
  for _, client in ipairs(vim.lsp.get_clients({ name = 'flashls' })) do
    for bufnr in pairs(client.attached_buffers) do
      if ghost.attached(bufnr) then
        ghost.clear(bufnr)
      elseif has_inline_completion() then
        enable_ghost_text_if_current(bufnr)
      end
    end
  end
  vim.notify('flashls: suggestions ' .. (M.enabled and 'on' or 'off'))
end

return M
