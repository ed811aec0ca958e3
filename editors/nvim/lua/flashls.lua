--- flashls for Neovim: enables the `flashls` server (config in `lsp/flashls.lua`),
--- shows its suggestions as ghost text and maps a key to accept them.
---
--- Neovim 0.12+: `textDocument/inlineCompletion` ghost text (`vim.lsp.inline_completion`).
--- Neovim 0.11: `textDocument/completion` in the popup menu (`vim.lsp.completion`).
--- Neovim 0.10: `vim.lsp.start` per buffer; completion through omnifunc (<C-x><C-o>).

local M = {}

--- Whether ghost text is on; flipped by `:FlashlsToggle`.
M.enabled = true

---@class flashls.Options
---@field mode? 'auto'|'ghost'|'popup' `auto`: ghost text where Neovim has it (0.12+), else popup.
---@field accept_key? string|false Insert-mode key accepting the ghost text (default `<Tab>`).
---@field next_key? string|false Show the next suggestion (default `<M-]>`).
---@field prev_key? string|false Show the previous suggestion (default `<M-[>`).
---@field config? vim.lsp.Config Merged over `lsp/flashls.lua` (cmd, settings, ...).

---@type flashls.Options
M.defaults = {
  mode = 'auto',
  accept_key = '<Tab>',
  next_key = '<M-]>',
  prev_key = '<M-[>',
  config = nil,
}

local function has_inline_completion()
  return vim.lsp.inline_completion ~= nil
end

---@param opts flashls.Options
local function use_ghost_text(opts)
  if opts.mode == 'popup' then
    return false
  end
  return has_inline_completion()
end

--- Maps the accept/next/prev keys in one buffer; the accept key falls back to itself.
---@param bufnr integer
---@param opts flashls.Options
local function map_keys(bufnr, opts)
  if opts.accept_key then
    vim.keymap.set('i', opts.accept_key, function()
      if not vim.lsp.inline_completion.get() then
        return opts.accept_key
      end
    end, { buffer = bufnr, expr = true, desc = 'flashls: accept the suggestion' })
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
      if vim.fn.has('nvim-0.11') == 1 then
        client:notify('textDocument/didFocus', params)
      else
        client.notify('textDocument/didFocus', params) -- 0.10: a function field
      end
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
      if use_ghost_text(opts) then
        vim.lsp.inline_completion.enable(M.enabled, { bufnr = args.buf })
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

--- Enables flashls with ghost text (0.12+) or popup completion (0.11).
---@param opts? flashls.Options
function M.setup(opts)
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  if opts.mode == 'popup' then
    -- The server offers completion items only to clients without inline completion
    -- (else an editor would show each suggestion twice); popup mode asks for them.
    opts.config = vim.tbl_deep_extend('keep', opts.config or {},
      { settings = { flashls = { completion_fallback = 'always' } } })
  end
  on_attach(opts)
  if vim.lsp.config == nil then
    start_without_config_api(opts)
    return
  end
  if opts.config then
    vim.lsp.config('flashls', opts.config)
  end
  vim.lsp.enable('flashls')
end

--- Turns ghost text on or off in every buffer flashls serves (Neovim 0.12+).
function M.toggle()
  if not has_inline_completion() then
    vim.notify('flashls: ghost text needs Neovim 0.12+', vim.log.levels.WARN)
    return
  end
  M.enabled = not M.enabled
  for _, client in ipairs(vim.lsp.get_clients({ name = 'flashls' })) do
    for bufnr in pairs(client.attached_buffers) do
      vim.lsp.inline_completion.enable(M.enabled, { bufnr = bufnr })
    end
  end
  vim.notify('flashls: suggestions ' .. (M.enabled and 'on' or 'off'))
end

return M
